"""Off-platform contact identifiers in item text, normalised across the ways people hide them.

`extract(text)` finds phone numbers, e-mail addresses, URLs and domains, messaging handles
(Telegram, WeChat, Line, Kakao, Instagram...) and payment handles (PayPal, Venmo, Cash App
cashtags, IBANs, crypto wallets), each as a `Contact` whose `key` is the same however it was
written, and whose `raw` is the exact span of the original text it came from.

The text is folded first, character by character so that every folded character remembers the
original one: NFKC (full-width `０７９` and `＠` become `079` and `@`), format characters removed
(zero-width spaces and joiners, soft hyphens, bidi marks), Cyrillic and Greek look-alikes mapped
to the Latin letters they imitate (`сrурtо` -> `crypto`), lower case. Then the spelled-out forms
are rewritten: `(at)`, `[at]`, ` at ` (before a domain), `(dot)`, `[dot]`, ` dot ` (before a
top-level domain) and spaced `@`/`.`; runs of digits written as words (`zero seven nine...` in
English, Spanish, French, Portuguese, German and Indonesian, and Chinese numerals `一三八...`).

A bare run of digits is taken for a phone number only where something says it is one: a leading
`+` or `00`, a contact word shortly before it (call, WhatsApp, tel, 微信, телефон...), or an
obfuscation in the run itself (digits as words, full-width, every digit spaced). Prices, sizes,
dates and product codes stay out. A phone's key is its last 9 digits, so `+44 7911 123456`,
`0044 7911 123456` and `07911 123456` are one number.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("phone", "email", "url", "domain", "handle", "payment")
PHONE_KEY_DIGITS = 9  # national numbers are 9-11 digits; the last 9 survive any country or trunk prefix

# Look-alikes of Latin letters (Unicode TR39 confusables, the ones seen in evasion), after NFKC.
HOMOGLYPHS = str.maketrans({
    **dict(zip("аеорсухіјѕԁһӏкԛԝ", "aeopcyxijsdhlkqw")),  # Cyrillic lower case
    **dict(zip("АВЕКМНОРСТХІЈЅ", "ABEKMHOPCTXIJS")),  # Cyrillic upper case
    **dict(zip("αοριτκνυχ", "aopitkvux")),  # Greek lower case
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX")),  # Greek upper case
    "ı": "i", "ɡ": "g", "ɑ": "a",
})
NUMBER_WORDS = {
    "en": "zero one two three four five six seven eight nine", "es": "cero uno dos tres cuatro cinco seis siete ocho nueve",
    "fr": "zéro un deux trois quatre cinq six sept huit neuf", "pt": "zero um dois três quatro cinco seis sete oito nove",
    "de": "null eins zwei drei vier fünf sechs sieben acht neun",
    "id": "nol satu dua tiga empat lima enam tujuh delapan sembilan",
}
WORD_DIGIT = {w: str(d) for words in NUMBER_WORDS.values() for d, w in enumerate(words.split())}
WORD_DIGIT.update({"oh": "0", "tres": "3", "zero": "0"})
CJK_DIGIT = str.maketrans("零〇一二三四五六七八九", "00123456789")
TLDS = ("com|net|org|info|biz|io|me|co|shop|store|online|site|xyz|top|app|link|ly|to|cc|tv|gg|ru|cn|de|fr|uk|es|it|"
        "nl|br|id|vn|th|in|jp|kr|au|ca|mx|ar|tr|pl|ua|hk|tw|sg|my|ph|pk|ng|za|eu|us|example|email|club|live|vip|pro")
BARE_TLD_WORDS = {"in", "it", "is", "to", "me", "us", "id", "my", "co", "io"}  # `word.in` in prose is not a site
# Hosts whose bare name says nothing about who wrote it (marketplaces, social networks, couriers,
# shorteners, payment and messaging platforms): no `domain` identifier, and a `url` one only with a path.
PUBLIC_NAMES = frozenset(
    "amazon ebay etsy shopee tokopedia lazada bukalapak mercadolibre mercadolivre aliexpress alibaba taobao tmall jd "
    "rakuten vinted leboncoin kleinanzeigen allegro olx facebook fb instagram youtube youtu tiktok twitter x google "
    "apple microsoft dhl ups fedex usps royalmail correios jne sf-express laposte colissimo hermes dpd gls paypal "
    "wikipedia whatsapp telegram wechat weixin line bit tinyurl linktr marketplace zalando otto temu shein".split())
SECOND_LEVEL = {"co", "com", "net", "org", "gov", "ac", "edu", "or", "ne"}
STOP_VALUES = frozenset("only group channel please with your and for the link here there me us now chat message "
                        "account contact admin same below above info details order orders support".split())
CURRENCY_TAGS = frozenset("usd cad aud hkd sgd nzd mxn twd".split())

# The format characters (Unicode category Cf: zero-width spaces and joiners, soft hyphen, bidi
# marks, tags), for the fast pass; the tracked pass asks unicodedata.category per character.
FORMAT_CHARS = re.compile("[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u08e2\u180e\u200b-\u200f\u202a-\u202e"
                          "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U0001bca0-\U0001bca3"
                          "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]")
_W = r"(?![a-z0-9])"  # the end of a word in folded text
_NUM_TOKEN = rf"(?:\d+|(?:{'|'.join(sorted(WORD_DIGIT, key=len, reverse=True))}){_W})"
NUMBER_RUN = re.compile(rf"(?<![a-z0-9]){_NUM_TOKEN}(?:[\s\-.,/]{{1,3}}{_NUM_TOKEN}){{2,}}")
CJK_RUN = re.compile(r"[零〇一二三四五六七八九]{7,}")
AT_BRACKET = re.compile(r"\s*[(\[{<]\s*(?:at|@)\s*[)\]}>]\s*")
DOT_BRACKET = re.compile(r"\s*[(\[{<]\s*(?:dot|\.|punto|point|punkt|titik)\s*[)\]}>]\s*")
_DOMAIN_AHEAD = rf"(?=[a-z0-9-]+(?:\s*\.\s*|\s+dot\s+)(?:[a-z0-9-]+(?:\s*\.\s*|\s+dot\s+))*(?:{TLDS}){_W})"
MAIL_HOSTS = "gmail|googlemail|yahoo|hotmail|outlook|live|msn|aol|icloud|proton|protonmail|gmx|web|yandex|mail|qq|163|126|" \
             "sina|foxmail|naver|daum|orange|free|libero|uol|bol"
# ` at ` is an @ only where it cannot be prose: before a mail provider, or before a spelled-out
# ` dot ` (`find us at etsy.com` stays prose; `jo at gmail.com`, `jo at shop dot com` do not).
AT_WORD = re.compile(rf"(?<=[a-z0-9_])(?:\s+at\s+(?=(?:{MAIL_HOSTS})(?:\s*\.\s*|\s+dot\s+)|[a-z0-9-]+\s+dot\s+)"
                     rf"|(?:\s+@\s*|@\s+){_DOMAIN_AHEAD})")
# A spaced dot before a top-level domain (`gmail . com`, `shop dot com`); a sentence's full stop
# (`our shop. shop now`) has no space before it, and is left alone.
DOT_WORD = re.compile(rf"(?<=[a-z0-9])(?:\s+dot\s+|\s+\.\s*)(?=(?:[a-z0-9-]+(?:\s+dot\s+|\.))*(?:{TLDS}){_W})")
EMAIL = re.compile(r"(?<![a-z0-9._%+-])([a-z0-9][a-z0-9._%+-]{0,63})@([a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24})(?![a-z0-9-])")
URL = re.compile(rf"(?<![a-z0-9@.-])(https?://)?(www\.)?((?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{TLDS}))"
                 rf"(?![a-z0-9-])(/(?:[^\s<>\"')\]]*[^\s<>\"')\].,;:!?])?)?")
IBAN = re.compile(r"(?<![a-z0-9])([a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,3})?)(?![a-z0-9])")
CRYPTO = re.compile(r"(?<![a-z0-9])(bc1[a-z0-9]{25,59}|0x[a-f0-9]{40}|t[1-9a-z]{33})(?![a-z0-9])")
CASHTAG = re.compile(r"(?<![\w$])\$([a-z][a-z0-9_]{3,19})(?!\w)")
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d(?:[ \t.\-()]{0,3}\d){7,15}(?!\w)")
PHONE_CUE = re.compile(
    r"whats\s?app|watsap|wasap|\bwa\b|\bzap\b|call|\btel\b|phone|mobile|\bmob\b|\bcell|\bsms\b|\btext\b|contact|viber|"
    r"signal|we\s?chat|weixin|\bvx\b|\bwx\b|微信|\bline\b|telegram|\btg\b|电话|手机|联系|телефон|\bтел|звони|handy|"
    r"t[ée]l[ée]phone|telefone|tel[ée]fono|\bhp\b|llam|appel|hubungi|kontak|ligue|nomor|n[úu]mero|\bdm\b|☎|📞|📱")
HANDLE_CUES = {
    "telegram": r"telegram|tele\s?gram|\btg\b|телеграм\w*|телег\w*|电报|纸飞机",
    "wechat": r"we\s?chat|weixin|\bvx\b|\bwx\b|v信|微信|威信",
    "line": r"\bline\s*(?:id|@|:)|ไลน์|ไอดีไลน์",
    "kakao": r"kakao\s?(?:talk)?|카톡|카카오톡",
    "instagram": r"instagram|\binsta\b|\big\b(?=\s*[:@])",
    "snapchat": r"snapchat|\bsnap\b(?=\s*[:@])",
}
PAYMENT_CUES = {"paypal": r"paypal", "venmo": r"venmo", "zelle": r"zelle", "revolut": r"revolut", "alipay": r"alipay|支付宝",
                "pix": r"\bpix\b", "cashapp": r"cash\s?app"}
_VALUE = r"\s*(?:id)?\s*(?P<sep>[:=@\-]|\bis\b)?\s*@?(?P<value>[a-z0-9][a-z0-9_.\-]{3,31})(?![a-z0-9_@])"
CUED = [(kind, via, re.compile(rf"(?:{cue}){_VALUE}")) for kind, cues in (("handle", HANDLE_CUES), ("payment", PAYMENT_CUES))
        for via, cue in cues.items()]
ANY_CUE = re.compile("|".join(f"(?:{cue})" for cues in (HANDLE_CUES, PAYMENT_CUES) for cue in cues.values()))
LINKS = {"wa.me": ("phone", "whatsapp"), "api.whatsapp.com": ("phone", "whatsapp"), "t.me": ("handle", "telegram"),
         "telegram.me": ("handle", "telegram"), "line.me": ("handle", "line"), "paypal.me": ("payment", "paypal"),
         "instagram.com": ("handle", "instagram"), "venmo.com": ("payment", "venmo"), "cash.app": ("payment", "cashapp")}


@dataclass(frozen=True)
class Contact:
    """One identifier found in a text.

    Attributes:
        kind: phone, email, url, domain, handle or payment.
        value: the normalised identifier (a phone: its last 9 digits).
        raw: the span of the original text it was read from.
        start, end: that span's offsets in the original text.
        via: the app or service the text names for it (whatsapp, telegram, paypal...), or "".
        hidden: it was written to dodge a filter: folding or rewriting changed it (look-alike or
            full-width letters, zero-width characters, digits as words, `(at)`), or a phone
            number's digits are spaced out one by one. Honest shops seldom do this.
    """

    kind: str
    value: str
    raw: str
    start: int
    end: int
    via: str = ""
    hidden: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


class _Folded:
    """Folded text and, per folded character, the offset of the original character it came from
    (None when offsets are not tracked: the fast first pass)."""

    def __init__(self, raw: str, track: bool):
        self.raw = raw
        if raw.isascii():
            self.text, self.src = raw.lower(), (list(range(len(raw))) if track else None)
        elif not track:
            text = FORMAT_CHARS.sub("", unicodedata.normalize("NFKC", raw))
            self.text, self.src = text.translate(HOMOGLYPHS).casefold(), None
        else:
            self.text, self.src = self._fold_tracked(raw)

    @staticmethod
    def _fold_tracked(raw: str) -> tuple[str, list[int]]:
        out, src = [], []
        for i, ch in enumerate(raw):
            if ch < "\x80":
                out.append(ch.lower())
                src.append(i)
                continue
            if unicodedata.category(ch) == "Cf":  # zero-width characters, soft hyphens, bidi marks
                continue
            for c in unicodedata.normalize("NFKC", ch).translate(HOMOGLYPHS).casefold():
                out.append(c)
                src.append(i)
        return "".join(out), src

    def rewrite(self, pattern: re.Pattern, repl: Callable[[re.Match], str | None]) -> None:
        """Replace the matches `repl` rewrites (None: leave it), keeping offsets: the first new
        character maps to the match's first original character, the last to its last."""
        if self.src is None:
            self.text = pattern.sub(lambda m: m.group(0) if (new := repl(m)) is None else new, self.text)
            return
        parts, offsets, at = [], [], 0
        for m in pattern.finditer(self.text):
            new = repl(m)
            if new is None:
                continue
            parts.append(self.text[at:m.start()])
            offsets += self.src[at:m.start()]
            parts.append(new)
            offsets += [self.src[m.start()]] * max(0, len(new) - 1) + [self.src[m.end() - 1]] * (len(new) > 0)
            at = m.end()
        if parts:
            self.text = "".join(parts) + self.text[at:]
            self.src = offsets + self.src[at:]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of folded text[start:end] (the folded one where offsets are not tracked)."""
        if self.src is None:
            return start, end
        return self.src[start], self.src[end - 1] + 1


def _number_run(m: re.Match) -> str | None:
    tokens = re.findall(_NUM_TOKEN, m.group(0))
    if all(t.isdigit() for t in tokens):
        return None  # plain digits: the phone pattern reads them as they are
    digits = "".join(t if t.isdigit() else WORD_DIGIT[t] for t in tokens)
    return digits if len(digits) >= 7 else None


def fold(text: str, track: bool = False) -> _Folded:
    """The text folded and rewritten for matching (see the module docstring)."""
    folded = _Folded(text, track)
    if any(b in folded.text for b in "([{<"):
        folded.rewrite(AT_BRACKET, lambda m: "@")
        folded.rewrite(DOT_BRACKET, lambda m: ".")
    if " at " in folded.text or "@" in folded.text:
        folded.rewrite(AT_WORD, lambda m: "@")
    if "dot" in folded.text or " ." in folded.text:
        folded.rewrite(DOT_WORD, lambda m: ".")
    if not folded.text.isascii():
        folded.rewrite(CJK_RUN, lambda m: m.group(0).translate(CJK_DIGIT))
    folded.rewrite(NUMBER_RUN, _number_run)
    return folded


def normalise(text: str) -> str:
    """The folded, rewritten text identifiers are matched in (for tests and for allow-list entries)."""
    return fold(text).text


def extract(text: str) -> list[Contact]:
    """Every identifier in a text, once per key, in the order found (e-mails, URLs, wallets and
    IBANs, cued handles and payment handles, cashtags, then phones; a later match overlapping an
    earlier one is not taken)."""
    if not text or not _scan(fold(text)):  # most texts hold none: one fast pass without offsets
        return []
    return _scan(fold(text, track=True))


def mask(text: str, contacts: list[Contact] | None = None) -> str:
    """The text with each identifier replaced by `<kind>` and every number by 0: the template a
    message is written from, for finding the same script sent with other numbers and names."""
    out, at = [], 0
    for c in sorted(contacts if contacts is not None else extract(text), key=lambda c: c.start):
        if c.start >= at:
            out += [text[at:c.start], f"<{c.kind}>"]
            at = c.end
    return re.sub(r"\d+", "0", "".join(out) + text[at:])


def _scan(folded: _Folded) -> list[Contact]:
    found: dict[str, Contact] = {}
    taken: list[tuple[int, int]] = []

    def take(kind: str, value: str | None, s: int, e: int, via: str = "", overlap_ok=None) -> None:
        if not value or any(s < b and a < e and (a, b) != overlap_ok for a, b in taken):
            return
        taken.append((s, e))
        start, end = folded.span(s, e)
        raw = folded.raw[start:end]
        hidden = raw.lower() != text[s:e] or (kind == "phone" and len(re.findall(r"(?<!\d)\d(?!\d)", text[s:e])) >= 7)
        contact = Contact(kind, value, raw, start, end, via, hidden)
        found.setdefault(contact.key, contact)

    text = folded.text
    for m in EMAIL.finditer(text) if "@" in text else ():
        take("email", _email(m.group(1), m.group(2)), m.start(), m.end())
    for m in URL.finditer(text) if "." in text else ():
        for kind, value, via in _url(m):  # a URL can give a url and a domain identifier from one span
            take(kind, value, m.start(), m.end(), via, overlap_ok=(m.start(), m.end()))
    for m in CRYPTO.finditer(text):
        if any(ch.isdigit() for ch in m.group(1)):
            take("payment", m.group(1), m.start(), m.end(), "crypto")
    for m in IBAN.finditer(text):
        take("payment", _iban(m.group(1)), m.start(), m.end(), "iban")
    for kind, via, pattern in CUED if ANY_CUE.search(text) else ():
        for m in pattern.finditer(text):
            take(kind, _handle(m), m.start("value"), m.end("value"), via)
    for m in CASHTAG.finditer(text) if "$" in text else ():
        if m.group(1) not in CURRENCY_TAGS:
            take("payment", m.group(1), m.start(), m.end(), "cashapp")
    for m in PHONE.finditer(text):
        take("phone", _phone(m, folded), m.start(), m.end())
    return list(found.values())


def _email(local: str, domain: str) -> str:
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):  # Gmail ignores dots in the name
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def registrable(host: str) -> str:
    """The part of a host name its owner registered: `shop.example.co.uk` -> `example.co.uk`."""
    labels = host.split(".")
    keep = 3 if len(labels) >= 3 and labels[-2] in SECOND_LEVEL and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def is_public(host: str) -> bool:
    return registrable(host).split(".")[0] in PUBLIC_NAMES


def _url(m: re.Match) -> list[tuple[str, str, str]]:
    scheme, www, host, path = m.group(1), m.group(2), m.group(3), (m.group(4) or "")
    segments = [s for s in re.split(r"[/?#&=]", path) if s]
    if host in LINKS:
        kind, via = LINKS[host]
        value = _link_value(kind, host, segments)
        return [(kind, value, via)] if value else []
    if not (scheme or www or segments) and host.rsplit(".", 1)[1] in BARE_TLD_WORDS and host.count(".") == 1:
        return []
    out = []
    clean = path.split("?")[0].split("#")[0].strip("/.,;:!")
    if clean:
        out.append(("url", host + "/" + "/".join(clean.split("/")[:3]), ""))
    if not is_public(host):
        out.append(("domain", registrable(host), ""))
    return out


def _link_value(kind: str, host: str, segments: list[str]) -> str | None:
    if kind == "phone":
        digits = next((re.sub(r"\D", "", s) for s in segments if len(re.sub(r"\D", "", s)) >= 8), "")
        return digits[-PHONE_KEY_DIGITS:] or None
    if host == "line.me":  # line.me/ti/p/~id, line.me/R/ti/p/@id
        segments = [s.lstrip("~@") for s in segments if s.startswith(("~", "@"))]
    value = segments[0].lstrip("@").strip(".") if segments else ""
    return value if len(value) >= 3 and value not in ("joinchat", "s", "p") else None


def _iban(text: str) -> str | None:
    """A compact IBAN whose mod-97 check holds, else None."""
    compact = re.sub(r"\s", "", text).upper()
    if not 15 <= len(compact) <= 34:
        return None
    number = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
    return compact if int(number) % 97 == 1 else None


def _handle(m: re.Match) -> str | None:
    value = m.group("value").strip("._-")
    if value.isdigit():
        return None  # a number after an app's name is a phone: the phone pattern reads it
    if value in STOP_VALUES or len(value) < 4:
        return None
    if not m.group("sep") and not re.search(r"[\d_.]", value):
        return None  # "message me on telegram for prices": a word, not a handle
    return value


def _phone(m: re.Match, folded: _Folded) -> str | None:
    found = m.group(0)
    digits = re.sub(r"\D", "", found)
    if found.startswith("00"):
        digits = digits[2:]
    if not 9 <= len(digits) <= 15:
        return None
    if folded.src is None:
        return digits  # the fast first pass: any candidate; the tracked pass decides
    start, end = folded.span(m.start(), m.end())
    raw = folded.raw[start:end]
    hidden = any(c not in "0123456789 +-.()/" for c in raw) or len(re.findall(r"(?<!\d)\d(?!\d)", found)) >= 7
    cued = PHONE_CUE.search(folded.text[max(0, m.start() - 40):m.start()])
    if found.startswith(("+", "00")) or cued or hidden:
        return digits[-PHONE_KEY_DIGITS:]
    return None
