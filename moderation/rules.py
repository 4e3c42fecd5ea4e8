"""Keyword and regex rules per policy: the rule baseline, and the fake backend's brain.

Deliberately the kind of list a trust-and-safety team starts with: a few dozen patterns per
policy in the languages the project covers, matched case-insensitively. It is a baseline to
beat, not a moderator.
"""

from __future__ import annotations

import re
from functools import cache

# policy -> (severity, decision, patterns)
RULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "prohibited_item": ("critical", "remove", (
        r"ivory", r"shark fin", r"pangolin", r"rhino horn", r"c[o0]ca[i1]ne", r"heroin", r"meth(amphetamine)?\b",
        r"fentanyl", r"\bpistol\b", r"ammunition", r"\bammo\b", r"\bglock\b", r"ghost gun", r"80% lower",
        r"fake (id|passport|licen[cs]e)", r"counterfeit (money|bills|notes)", r"stolen", r"skimmer", r"象牙", r"枪支",
        r"marfil", r"elfenbein", r"gading", r"marfim", r"munição", r"munición",
    )),
    "restricted_item": ("medium", "restrict", (
        r"\bvapes?\b", r"e-?cig", r"no prescription", r"without (a )?prescription", r"\bcbd\b", r"fireworks?",
        r"pesticide", r"\bvodka\b|\bwhisk(e)?y\b|\bliquor\b", r"tobacco", r"nicotine", r"tramadol", r"oxycodone",
        r"adderall", r"xanax", r"sin receta", r"ohne rezept", r"sans ordonnance", r"tanpa resep", r"sem receita", r"电子烟",
    )),
    "counterfeit_ip": ("high", "remove", (
        r"r[e3]pl[i1]ca", r"\b1:1\b", r"\baaa\+?\b", r"mirror quality", r"counterfeit", r"\bfake\b", r"knock-?off",
        r"cracked", r"pirated", r"\bkw\b", r"高仿", r"复刻", r"莆田", r"réplica", r"imitación", r"nachbildung", r"fälschung",
        r"contrefaçon", r"tiruan", r"\bkw super\b", r"falsificad[oa]",
    )),
    "fraud_scam": ("high", "remove", (
        r"giveaway", r"you (have )?won", r"claim (your )?prize", r"verify your (card|account)", r"deposit first",
        r"advance (fee|payment)", r"guaranteed (returns?|profit)", r"double your", r"gift card", r"bit\.ly",
        r"\.example\b", r"免费领取", r"中奖", r"ganaste", r"gewonnen", r"gagné", r"menang", r"ganhou", r"pyramid",
        r"recruit \d+", r"investment opportunity",
    )),
    "off_platform_transaction": ("medium", "remove", (
        r"w\.?h\.?a\.?t\.?s\.?a\.?p\.?p", r"\bwa\b", r"telegram", r"\btg\b", r"wechat|微信", r"line id", r"bank transfer",
        r"wire transfer", r"\bpaypal\b", r"\bcrypto\b|\busdt\b|\bbitcoin\b", r"\+\d[\d\s-]{7,}", r"dm me",
        r"outside (the )?(app|platform)", r"transferencia", r"überweisung", r"virement", r"transfer bank", r"\bpix\b",
        r"zelle", r"venmo", r"cash ?app",
    )),
    "misleading_claim": ("medium", "review", (
        r"\bcures?\b", r"miracle", r"lose \d+ ?(kg|lbs?|pounds)", r"100% (effective|guaranteed)", r"clinically proven",
        r"doctors hate", r"fda approved", r"no side effects", r"guaranteed results", r"5[- ]star reviews?",
        r"治愈", r"根治", r"cura\b", r"heilt", r"guérit", r"menyembuhkan", r"milagr",
    )),
    "missing_required_info": ("low", "review", (
        r"no ce mark", r"without ce", r"no ingredients", r"mileage unknown", r"no label", r"unlabell?ed",
    )),
    "adult_sexual": ("high", "remove", (
        r"escort", r"sexual services?", r"\bnsfw\b", r"\bnudes?\b", r"onlyfans|0nlyf", r"happy ending", r"explicit",
        r"\bxxx\b", r"porn", r"色情", r"上门服务", r"acompañante", r"desnud", r"nackt", r"sexe", r"pijat plus", r"acompanhante",
    )),
    "hate_harassment": ("high", "remove", (
        r"\[slur\]", r"\[beleidigung\]", r"\[insulte\]", r"go back to (your|where)", r"subhuman", r"vermin", r"kys\b",
        r"kill yourself", r"i know where you live", r"heil", r"day of the rope", r"\(\(\(", r"retard",
    )),
    "violence_graphic": ("high", "remove", (
        r"\bgore\b", r"behead", r"dismember", r"massacre", r"i will (kill|hurt|shoot)", r"shoot (up|you)", r"bomb",
        r"bloodbath", r"torture", r"dogfight", r"mutilat", r"血腥", r"砍死", r"matar", r"töten", r"tuer", r"bunuh",
    )),
    "self_harm": ("critical", "review", (
        r"kill myself", r"suicide", r"self[- ]harm", r"cutting myself", r"unal[i1]ve", r"starve yourself", r"thinspo",
        r"pro[- ]?ana", r"\bana\b", r"自杀", r"自残", r"suicid", r"selbstmord", r"bunuh diri", r"me matar",
    )),
    "spam": ("low", "remove", (
        r"click here", r"buy now buy now", r"free followers", r"subscribe to my channel", r"check out my channel",
        r"follow for follow|f4f", r"earn \$\d+ (a|per) day", r"work from home", r"limited offer!!+", r"(.)\1{6,}",
        r"#\w+(\s+#\w+){6,}", r"promo code", r"visit my (profile|page)",
    )),
}


@cache
def _compiled() -> dict[str, re.Pattern]:
    return {policy: re.compile("|".join(f"(?:{p})" for p in patterns), re.I) for policy, (_, _, patterns) in RULES.items()}


def rule_matches(text: str) -> dict[str, str]:
    """policy -> the first matching span of text, for every policy whose rules fire."""
    found = {}
    for policy, pattern in _compiled().items():
        match = pattern.search(text)
        if match and match.group(0).strip():
            found[policy] = match.group(0)
    return found
