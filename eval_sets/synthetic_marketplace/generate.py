#!/usr/bin/env python
"""Generate the synthetic marketplace (CARD.md): seven daily dumps with a known ground truth.

Deterministic: every draw comes from random.Random(SEED), nothing depends on set order or the
clock, so the committed files are exactly what this script writes.

    python eval_sets/synthetic_marketplace/generate.py             # (re)write the committed files
    python eval_sets/synthetic_marketplace/generate.py --check     # exit 1 if they differ from a fresh run
    python eval_sets/synthetic_marketplace/generate.py --big /tmp/big.jsonl --rows 1000000   # a large dump
    python eval_sets/synthetic_marketplace/generate.py --runs runs/synthetic   # run files of the synthetic scorer

The synthetic scorer (`synthetic_run`) stands in for a model where none may run (tests, a busy
CPU): for each item and policy a score from the ground truth and a hash of (item, policy): a
planted policy scores uniformly in [t - 0.08, t + 0.12] around its shipped threshold t (so about
40% of planted items fall just under it), any other policy 0.35 u^3 (far below). On days 6 and 7
it adds 0.15 to every spam score: a simulated model change that `moderation trends` must raise
as drift on day 6 without a flagged-rate alert. Its run files are real run files (RunRecord,
moderation.runfile.OutputFile, a manifest), with provenance model `synthetic-scorer`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20250303
DAYS = 7
START = date(2025, 3, 3)
TEMPLATE_PER_DAY = [0, 0, 2, 6, 13, 24, 38]  # the scam script appears on day 3 and grows
VAPES_PER_DAY = 6  # a steady flagged cluster: must never be called emerging
DRIFT_DAYS = (6, 7)  # the synthetic scorer's simulated model change (spam scores + 0.15)
DHL = "+49 228 4333 112"
SUPPORT = "help@marketplace.example"

LANGS = {
    "en": {"regions": ["US", "UK"], "products": ["ceramic mug", "linen apron", "oak cutting board", "wool scarf",
           "leather wallet", "scented candle", "cotton tote bag", "brass lamp", "wall clock", "plant pot", "notebook",
           "silver ring", "denim jacket", "yoga mat", "tea set", "picture frame"],
           "adjectives": ["handmade", "vintage", "hand-painted", "organic", "minimalist", "rustic", "recycled", "classic",
                          "small-batch", "lightweight", "heavy-duty", "colourful"],
           "sentences": ["Made in our {place} workshop from {material}.", "Measures about {n} cm, weighs {w} g.",
                         "Each piece is slightly different, which is the charm.", "Ships within {d} working days.",
                         "Gift wrapping available on request.", "Colour: {color}.", "Care: wipe clean, do not bleach.",
                         "Part of our {season} collection.", "Free returns within 30 days.",
                         "Photos show the exact item you will receive.", "Bundle two and save {pct}%.",
                         "Packed in plastic-free materials."],
           "materials": ["stoneware", "European linen", "solid oak", "merino wool", "vegetable-tanned leather",
                         "soy wax", "organic cotton", "recycled brass"],
           "colors": ["sage green", "ink blue", "terracotta", "natural", "charcoal", "mustard"],
           "places": ["Bristol", "Leeds", "Portland", "Austin", "Cardiff", "Boise"],
           "contact": "Questions? {c}", "shipping": "Shipping with DHL Express, hotline {h}.",
           "support": "Problems with an order? Write to {s}.",
           "chat": ["is this still available?", "love the colour!", "how long is shipping to {place}?", "thanks, ordered",
                    "does it come in {color}?", "great stream today", "what size is the small one?", "hello from {place}"]},
    "fr": {"regions": ["EU"], "products": ["bol en grès", "tablier en lin", "bougie parfumée", "sac en cuir",
           "pull en laine", "vase en céramique", "carnet relié", "boucles d'oreilles", "coussin brodé", "plateau en bois"],
           "adjectives": ["artisanal", "vintage", "fait main", "bio", "recyclé", "unique", "élégant", "rustique"],
           "sentences": ["Fabriqué dans notre atelier de {place} en {material}.", "Dimensions : environ {n} cm.",
                         "Chaque pièce est unique.", "Expédition sous {d} jours ouvrés.", "Couleur : {color}.",
                         "Emballage cadeau possible.", "Retours gratuits sous 30 jours.", "Entretien : lavage à la main.",
                         "Collection {season}.", "Lot de deux : {pct} % de remise."],
           "materials": ["grès", "lin lavé", "laine mérinos", "cuir pleine fleur", "cire de soja", "chêne massif"],
           "colors": ["vert sauge", "bleu nuit", "terracotta", "naturel", "moutarde"],
           "places": ["Lyon", "Nantes", "Lille", "Bordeaux", "Rennes"],
           "contact": "Une question ? {c}", "shipping": "Livraison DHL Express, assistance {h}.",
           "support": "Un souci avec une commande ? Écrivez à {s}.",
           "chat": ["toujours disponible ?", "superbe couleur", "livraison vers {place} ?", "merci, commandé",
                    "existe en {color} ?", "bonjour de {place}"]},
    "de": {"regions": ["EU"], "products": ["Keramikbecher", "Leinenschürze", "Holzbrett", "Wollschal", "Ledergeldbörse",
           "Duftkerze", "Baumwolltasche", "Wanduhr", "Blumentopf", "Notizbuch"],
           "adjectives": ["handgemacht", "vintage", "nachhaltig", "schlicht", "robust", "klassisch", "bunt", "regional"],
           "sentences": ["Hergestellt in unserer Werkstatt in {place} aus {material}.", "Maße: ca. {n} cm.",
                         "Jedes Stück ist ein Unikat.", "Versand innerhalb von {d} Werktagen.", "Farbe: {color}.",
                         "Geschenkverpackung auf Wunsch.", "Kostenlose Rücksendung innerhalb von 30 Tagen.",
                         "Pflege: feucht abwischen.", "Aus der {season}-Kollektion.", "Im Doppelpack {pct} % günstiger."],
           "materials": ["Steinzeug", "Leinen", "Eichenholz", "Merinowolle", "pflanzlich gegerbtem Leder", "Sojawachs"],
           "colors": ["salbeigrün", "nachtblau", "terrakotta", "natur", "senfgelb"],
           "places": ["Leipzig", "Freiburg", "Kiel", "Bremen", "Augsburg"],
           "contact": "Fragen? {c}", "shipping": "Versand mit DHL Express, Hotline {h}.",
           "support": "Probleme mit einer Bestellung? Schreiben Sie an {s}.",
           "chat": ["noch verfügbar?", "schöne Farbe!", "Versand nach {place}?", "danke, bestellt", "gibt es das in {color}?"]},
    "es": {"regions": ["MX", "ES"], "products": ["taza de barro", "delantal de lino", "tabla de madera", "bufanda de lana",
           "cartera de piel", "vela aromática", "bolsa de algodón", "reloj de pared", "maceta pintada", "libreta"],
           "adjectives": ["artesanal", "vintage", "hecho a mano", "orgánico", "reciclado", "clásico", "colorido", "rústico"],
           "sentences": ["Hecho en nuestro taller de {place} con {material}.", "Mide unos {n} cm.",
                         "Cada pieza es única.", "Envío en {d} días hábiles.", "Color: {color}.",
                         "Envoltura de regalo disponible.", "Devoluciones gratis en 30 días.", "Colección {season}.",
                         "Llévate dos con {pct}% de descuento.", "Cuidado: limpiar con paño húmedo."],
           "materials": ["barro cocido", "lino", "madera de pino", "lana merino", "piel curtida", "cera de soya"],
           "colors": ["verde salvia", "azul marino", "terracota", "natural", "mostaza"],
           "places": ["Oaxaca", "Puebla", "Sevilla", "Valencia", "Guadalajara"],
           "contact": "¿Dudas? {c}", "shipping": "Envíos con DHL Express, línea de ayuda {h}.",
           "support": "¿Problemas con un pedido? Escribe a {s}.",
           "chat": ["¿sigue disponible?", "me encanta el color", "¿envían a {place}?", "gracias, ya pedí", "¿hay en {color}?"]},
    "pt": {"regions": ["BR"], "products": ["caneca de cerâmica", "avental de linho", "tábua de madeira", "cachecol de lã",
           "carteira de couro", "vela aromática", "bolsa de algodão", "relógio de parede", "vaso pintado", "caderno"],
           "adjectives": ["artesanal", "vintage", "feito à mão", "orgânico", "reciclado", "clássico", "colorido", "rústico"],
           "sentences": ["Feito no nosso ateliê em {place} com {material}.", "Mede cerca de {n} cm.",
                         "Cada peça é única.", "Envio em {d} dias úteis.", "Cor: {color}.", "Embalagem para presente.",
                         "Troca grátis em 30 dias.", "Coleção {season}.", "Leve dois com {pct}% de desconto.",
                         "Limpar com pano úmido."],
           "materials": ["cerâmica", "linho", "madeira de reflorestamento", "lã", "couro legítimo", "cera de soja"],
           "colors": ["verde sálvia", "azul marinho", "terracota", "natural", "mostarda"],
           "places": ["Recife", "Curitiba", "Belo Horizonte", "Salvador", "Porto Alegre"],
           "contact": "Dúvidas? {c}", "shipping": "Envio pela DHL Express, central {h}.",
           "support": "Problemas com um pedido? Escreva para {s}.",
           "chat": ["ainda disponível?", "amei a cor", "entrega em {place}?", "obrigada, comprei", "tem em {color}?"]},
    "id": {"regions": ["ID"], "products": ["cangkir keramik", "celemek linen", "talenan kayu", "syal rajut", "dompet kulit",
           "lilin aromaterapi", "tas kanvas", "jam dinding", "pot tanaman", "buku catatan"],
           "adjectives": ["buatan tangan", "vintage", "organik", "daur ulang", "klasik", "minimalis", "warna-warni", "premium"],
           "sentences": ["Dibuat di bengkel kami di {place} dari {material}.", "Ukuran sekitar {n} cm.",
                         "Setiap barang unik.", "Dikirim dalam {d} hari kerja.", "Warna: {color}.",
                         "Bisa dibungkus kado.", "Garansi retur 30 hari.", "Koleksi {season}.", "Beli dua hemat {pct}%.",
                         "Bersihkan dengan kain lembap."],
           "materials": ["tanah liat", "linen", "kayu jati", "benang wol", "kulit sapi", "lilin kedelai"],
           "colors": ["hijau sage", "biru dongker", "terakota", "natural", "kuning mustard"],
           "places": ["Yogyakarta", "Bandung", "Solo", "Malang", "Denpasar"],
           "contact": "Pertanyaan? {c}", "shipping": "Kirim pakai DHL Express, layanan {h}.",
           "support": "Masalah pesanan? Tulis ke {s}.",
           "chat": ["masih ada kak?", "warnanya bagus", "bisa kirim ke {place}?", "makasih, sudah order", "ada warna {color}?"]},
    "zh": {"regions": ["CN"], "products": ["手工陶瓷杯", "亚麻围裙", "实木砧板", "羊毛围巾", "真皮钱包", "香薰蜡烛", "帆布包",
           "挂钟", "花盆", "笔记本"],
           "adjectives": ["手工", "复古", "原创", "环保", "简约", "经典", "彩色", "精致"],
           "sentences": ["在{place}工作室用{material}制作。", "尺寸约{n}厘米。", "每件都略有不同。", "{d}个工作日内发货。",
                         "颜色：{color}。", "可提供礼品包装。", "30天内免费退货。", "{season}系列。", "买两件优惠{pct}%。",
                         "用湿布擦拭即可。"],
           "materials": ["陶土", "亚麻", "橡木", "羊毛", "植鞣皮", "大豆蜡"],
           "colors": ["灰绿色", "藏青色", "陶土色", "原色", "芥末黄"],
           "places": ["景德镇", "杭州", "成都", "苏州", "大理"],
           "contact": "有问题请联系 {c}", "shipping": "DHL Express 发货，客服热线 {h}。",
           "support": "订单有问题？请写信至 {s}。",
           "chat": ["还有货吗？", "颜色好看", "能寄到{place}吗？", "谢谢，已下单", "有{color}的吗？"]},
}
SEASONS = ["spring", "summer", "autumn", "winter", "2025"]
NAME_A = ["atelier", "studio", "maison", "casa", "rumah", "werk", "loja", "craft", "little", "north", "wild", "golden",
          "blue", "quiet", "sunny", "old", "river", "maple", "olive", "stone"]
NAME_B = ["pottery", "linen", "goods", "makers", "shop", "home", "ceramics", "leather", "candles", "crafts", "market",
          "works", "corner", "house", "garden", "lane"]

# -- planted rings: (ring, members, labels, script, contact forms: one list of forms per member) ----------
RINGS = [
    {"name": "whatsapp-phones", "identifier": "phone:911123456", "language": "en", "region": "UK",
     "labels": ["fraud_scam", "off_platform_transaction"],
     "members": ["merchant:gadget_outlet_uk", "merchant:cheap_phones_4u", "merchant:phonezone_deals",
                 "merchant:mobile_bargain_hub"],
     "forms": [["+44 7911 123456"], ["WhatsApp 0 7 9 1 1 - 1 2 3 - 4 5 6"], ["order via wa.me/447911123456"],
               ["WA: zero seven nine one one one two three four five six"]],
     "scripts": ["Brand new iPhone 15 Pro Max 256GB sealed, {pct}% off retail. Limited stock, pay by bank transfer "
                 "only, no platform checkout. Message {contact} to reserve.",
                 "Samsung Galaxy S24 Ultra factory sealed at {pct}% below shop price. Deals only off the app, "
                 "payment first. Contact {contact} today."]},
    {"name": "wechat-replicas", "identifier": "handle:luxbag88", "language": "zh", "region": "CN",
     "labels": ["counterfeit_ip", "off_platform_transaction"],
     "members": ["merchant:lux_bags_cn", "merchant:designer_bag_vip", "merchant:hk_luxury_store"],
     "forms": [["微信：luxbag88"], ["VX: ｌｕｘｂａｇ８８"], ["wechat lux\u200bbag\u200c88", "luxbag88 (at) gmail [dot] com"]],
     "scripts": ["顶级原单 LV Neverfull 1:1 复刻，与专柜一致，{pct}折出售。加 {contact} 看实拍。",
                 "Gucci Marmont 高仿原厂皮，支持验货，{pct}折。私聊 {contact}。"]},
    {"name": "telegram-crypto", "identifier": "handle:x2_crypto_pro", "language": "en", "region": "US",
     "labels": ["fraud_scam", "off_platform_transaction"],
     "members": ["creator:crypto_signals_tv", "merchant:btc_doubler", "chat:moonboy_77", "chat:sasha_profit"],
     "forms": [["join t.me/x2_crypto_pro"], ["telegram: @х2_сrурtо_рrо", "send USDT TRC20 TN3W4H6rK2ce4vX9YnFQHwKENnHjoxb3m9"],
               ["tg x2_crypto_pro"], ["TELEGRAM @x2_crypto_pro"]],
     "scripts": ["Double your bitcoin in 24 hours with our signal group, {pct}% guaranteed returns. {contact}",
                 "Guaranteed {pct}% daily profit, send crypto and get 2x back. {contact}"]},
    {"name": "line-slimming", "identifier": "handle:slimfast.99", "language": "en", "region": "US",
     "labels": ["misleading_claim", "off_platform_transaction"],
     "members": ["merchant:slim_herbal_th", "merchant:diet_queen_id", "merchant:fast_slim_shop"],
     "forms": [["Line ID: slimfast.99"], ["ไลน์: slimfast.99", "visit slim-fast-99 dot shop"], ["slim-fast-99(dot)shop"]],
     "scripts": ["Lose {pct} kg in 7 days with our herbal slimming capsules, no diet no exercise, doctor approved. "
                 "Order outside the app for the best price: {contact}",
                 "Miracle fat burner tea, burns {pct} kg a week, 100% natural, clinically proven. Order: {contact}"]},
]
BANS = [
    {"account": "merchant:replica_king", "banned_at": "2025-03-01", "reason": "counterfeit, repeat",
     "contacts": "+86 138 0013 8000; replicaking@protonmail.com"},
    {"account": "merchant:pill_express", "banned_at": "2025-03-04", "reason": "prescription drugs without prescription",
     "contacts": ""},
]
RE_REGISTRATIONS = [
    {"banned": "merchant:replica_king", "account": "merchant:rk_luxe_replicas", "from_day": 3,
     "labels": ["counterfeit_ip"], "forms": ["contact replicaking(at)protonmail(dot)com", "电话 一三八零零一三八零零零"],
     "script": "Rolex Submariner super clone, 904L steel, same as genuine, {pct}% cheaper than retail. {contact}"},
    {"banned": "merchant:pill_express", "account": "merchant:pharma_direct_24", "from_day": 5,
     "labels": ["prohibited_item"], "forms": ["call +1 415 five five five 0199", "WhatsApp: 4 1 5 5 5 5 0 1 9 9"],
     "script": "Oxycodone 30mg and Xanax bars, no prescription needed, discreet shipping. {contact}"},
]
PILL_EXPRESS = {"account": "merchant:pill_express", "days": (1, 2), "labels": ["prohibited_item"],
                "text": "Tramadol 100mg, no prescription, next day delivery. Call +1 (415) 555-0199 to order."}
TEMPLATE = ("{greet} {name}! Your {brand} order #{order} qualifies for a {amount} loyalty refund. To release it, buy a "
            "{fee} BlueKey voucher and send the code to {contact} within {hours} hours.")
VAPE = ("Disposable vape {flavour} {puffs} puffs, 2% nicotine, 18+ only, ID check on delivery. Pack of {n}.")


class Marketplace:
    """The generator's state: one random stream, the accounts, the ground truth as it is planted."""

    def __init__(self, seed: int = SEED, shops: int = 180, creators: int = 20):
        self.rng = random.Random(seed)
        self.shops = self._shops(shops)
        self.creators = [f"{self.rng.choice(NAME_A)}_{self.rng.choice(['vlogs', 'makes', 'diy', 'tv', 'home'])}_{i}"
                         for i in range(creators)]
        self.chat_users = [f"{self.rng.choice(NAME_A)}{self.rng.choice(['fan', 'lover', 'girl', 'guy', 'cat'])}{i}"
                           for i in range(60)]
        self.labels: dict[str, list[str]] = {}
        self.template_items: dict[int, list[str]] = {}
        self.template_accounts: list[str] = []
        self.vape_items: dict[int, list[str]] = {}
        self.counter = 0

    def _shops(self, count: int) -> list[dict]:
        shops, langs = [], list(LANGS)
        for i in range(count):
            lang = langs[i % len(langs)]
            name = f"{self.rng.choice(NAME_A)}_{self.rng.choice(NAME_B)}_{i}"
            style = self.rng.choices(["none", "email", "site", "phone", "etsy"], [45, 20, 15, 10, 10])[0]
            shops.append({"name": name, "lang": lang, "region": self.rng.choice(LANGS[lang]["regions"]), "style": style,
                          "own": self._own_contact(name, style), "public": None})
        for shop in shops[:30]:
            shop["public"] = "dhl"
        for shop in shops[30:34]:
            shop["public"] = "support"
        for shop, host in zip(shops[34:38], ["www.etsy.com", "etsy.com", "tokopedia.com", "www.shopee.co.id"]):
            shop["public"], shop["host"] = "marketplace", host
        return shops

    def _own_contact(self, name: str, style: str) -> str | None:
        slug = name.replace("_", "")
        return {"none": None, "email": f"{slug}@{self.rng.choice(['gmail.com', 'outlook.com', 'mail.example'])}",
                "site": f"www.{slug}.com", "phone": f"tel +{self.rng.randint(30, 89)} {self.rng.randint(100, 999)} "
                                                    f"{self.rng.randint(1000000, 9999999)}",
                "etsy": f"etsy.com/shop/{slug}"}[style]

    def next_id(self, day: int) -> str:
        self.counter += 1
        return f"d{day}-{self.counter:05d}"

    def fill(self, text: str, lang: str) -> str:
        pack, r = LANGS[lang], self.rng
        return text.format(place=r.choice(pack["places"]), material=r.choice(pack["materials"]), n=r.randint(8, 60),
                           w=r.randint(80, 900), d=r.randint(1, 5), color=r.choice(pack["colors"]),
                           season=r.choice(SEASONS), pct=r.choice([10, 15, 20, 25]))

    def honest_listing(self, shop: dict, day: int) -> dict:
        pack, r = LANGS[shop["lang"]], self.rng
        product, adjective = r.choice(pack["products"]), r.choice(pack["adjectives"])
        sentences = [self.fill(s, shop["lang"]) for s in r.sample(pack["sentences"], r.randint(2, 4))]
        if shop["own"] and r.random() < 0.35:
            sentences.append(pack["contact"].format(c=shop["own"]))
        if shop["public"] == "dhl" and r.random() < 0.6:
            sentences.append(pack["shipping"].format(h=DHL))
        elif shop["public"] == "support" and r.random() < 0.6:
            sentences.append(pack["support"].format(s=SUPPORT))
        elif shop["public"] == "marketplace" and r.random() < 0.6:
            sentences.append(f"{shop['host']}")
        title = f"{adjective} {product}" if shop["lang"] not in ("fr", "es", "pt", "id") else f"{product} {adjective}"
        return {"id": self.next_id(day), "kind": "listing", "title": title[:1].upper() + title[1:],
                "description": " ".join(sentences), "price": round(r.uniform(5, 180), 2), "currency": "EUR",
                "category": "home", "seller": shop["name"], "region": shop["region"], "language": shop["lang"]}

    def profile(self, shop: dict, day: int) -> dict:
        pack = LANGS[shop["lang"]]
        about = f"{self.fill(self.rng.choice(pack['sentences']), shop['lang'])} {pack['contact'].format(c=shop['own'] or '-')}"
        return {"id": self.next_id(day), "kind": "merchant", "name": shop["name"], "about": about,
                "business_type": "handmade goods", "categories": ["home"], "region": shop["region"], "language": shop["lang"]}

    def video(self, creator: str, day: int) -> dict:
        lang = self.rng.choice(["en", "fr", "es", "pt", "id"])
        pack = LANGS[lang]
        product = self.rng.choice(pack["products"])
        transcript = " ".join(self.fill(s, lang) for s in self.rng.sample(pack["sentences"], 3))
        return {"id": self.next_id(day), "kind": "creator_video", "creator": creator, "caption": f"{product} ✨",
                "transcript": transcript, "region": self.rng.choice(pack["regions"]), "language": lang}

    def chat(self, channel: str, day: int, extra: list[dict] = ()) -> dict:
        lang = self.rng.choice(["en", "es", "pt", "id"])
        pack = LANGS[lang]
        users = self.rng.sample(self.chat_users, 4)
        messages = [{"user": u, "text": self.fill(self.rng.choice(pack["chat"]), lang)} for u in users]
        messages[1:1] = list(extra)
        return {"id": self.next_id(day), "kind": "live_chat", "channel": channel, "messages": messages,
                "region": self.rng.choice(pack["regions"]), "language": lang}

    def ring_items(self, day: int) -> list[dict]:
        """One item per ring member per day (a chat user: a message in an honest creator's chat)."""
        out = []
        for ring in RINGS:
            for member, forms in zip(ring["members"], ring["forms"]):
                role, name = member.split(":", 1)
                contact = " / ".join(forms) if day % 2 or len(forms) == 1 else forms[day % len(forms)]
                text = self.rng.choice(ring["scripts"]).format(pct=self.rng.choice([30, 40, 50, 60, 70]), contact=contact)
                if role == "chat":
                    item = self.chat(self.rng.choice(self.creators), day, [{"user": name, "text": text}])
                elif role == "creator":
                    item = {"id": self.next_id(day), "kind": "creator_video", "creator": name, "caption": "💰💰💰",
                            "transcript": text, "region": ring["region"], "language": ring["language"]}
                else:
                    item = {"id": self.next_id(day), "kind": "listing", "title": text.split(",")[0][:60],
                            "description": text, "price": self.rng.choice([99, 149, 199, 299]), "currency": "USD",
                            "seller": name, "region": ring["region"], "language": ring["language"]}
                self.labels[item["id"]] = ring["labels"]
                out.append(item)
        return out

    def banned_items(self, day: int) -> list[dict]:
        out = []
        if day in PILL_EXPRESS["days"]:
            out.append({"id": self.next_id(day), "kind": "listing", "title": "Tramadol 100mg", "description":
                        PILL_EXPRESS["text"], "price": 89, "currency": "USD", "seller": "pill_express", "region": "US",
                        "language": "en"})
            self.labels[out[-1]["id"]] = PILL_EXPRESS["labels"]
        for reg in RE_REGISTRATIONS:
            if day >= reg["from_day"]:
                contact = reg["forms"][day % len(reg["forms"])]
                text = reg["script"].format(pct=self.rng.choice([70, 80, 90]), contact=contact)
                out.append({"id": self.next_id(day), "kind": "listing", "title": text.split(",")[0][:60],
                            "description": text, "price": 120, "currency": "USD",
                            "seller": reg["account"].split(":", 1)[1], "region": "US", "language": "en"})
                self.labels[out[-1]["id"]] = reg["labels"]
        return out

    def template_item(self, day: int, k: int) -> dict:
        r = self.rng
        account = f"{r.choice(['refund', 'rebate', 'bonus', 'reward', 'payout'])}_{r.choice(['desk', 'center', 'team', 'hub'])}_{k:03d}"
        contact = r.choice([f"+1 {r.randint(201, 989)} {r.randint(200, 999)} {r.randint(1000, 9999)}",
                            f"refunds{r.randint(10, 9999)}@{r.choice(['gmail.com', 'outlook.com'])}"])
        text = TEMPLATE.format(greet=r.choice(["Hi", "Hello", "Dear", "Good news"]),
                               name=r.choice(["Anna", "James", "Maria", "Tom", "Lucy", "Omar", "Chen", "Sara"]),
                               brand=r.choice(["Amazon", "Shein", "Temu", "Walmart", "eBay"]), order=r.randint(10000, 99999),
                               amount=f"${r.randint(50, 400)}", fee=f"${r.choice([9.99, 14.99, 19.99])}", contact=contact,
                               hours=r.choice([12, 24, 48]))
        item = {"id": self.next_id(day), "kind": "listing", "title": "Loyalty refund voucher", "description": text,
                "price": 0, "currency": "USD", "category": "vouchers", "seller": account, "region": "US", "language": "en"}
        self.labels[item["id"]] = ["fraud_scam"]
        self.template_items.setdefault(day, []).append(item["id"])
        self.template_accounts.append(f"merchant:{account}")
        return item

    def vape_item(self, day: int, shop: str) -> dict:
        r = self.rng
        text = VAPE.format(flavour=r.choice(["mango ice", "blue razz", "watermelon", "mint"]), puffs=r.choice([600, 800]),
                           n=r.choice([3, 5, 10]))
        item = {"id": self.next_id(day), "kind": "listing", "title": "Disposable vape", "description": text, "price": 25,
                "currency": "GBP", "category": "vaping", "seller": shop, "region": "UK", "language": "en"}
        self.labels[item["id"]] = ["restricted_item"]
        self.vape_items.setdefault(day, []).append(item["id"])
        return item

    def day(self, day: int) -> list[dict]:
        r, items = self.rng, []
        if day == 1:
            items += [self.profile(shop, day) for shop in self.shops]
        for shop in self.shops:
            items += [self.honest_listing(shop, day) for _ in range(r.choice([0, 1, 1, 2, 2, 2, 3]))]
        items += [self.video(c, day) for c in self.creators if r.random() < 0.7]
        items += [self.chat(r.choice(self.creators), day) for _ in range(8)]
        items += [self.honest_twin(day, shop) for shop in ("phone_case_hub_12", "case_corner_88")]
        items += [self.vape_item(day, ["vape_corner_uk", "cloud_nine_vapes", "puff_palace"][k % 3])
                  for k in range(VAPES_PER_DAY)]
        items += self.ring_items(day) + self.banned_items(day)
        items += [self.template_item(day, len(self.template_accounts)) for _ in range(TEMPLATE_PER_DAY[day - 1])]
        r.shuffle(items)
        return items

    def honest_twin(self, day: int, shop: str) -> dict:
        """Two honest resellers with the maker's own description: near-duplicates with no contact."""
        return {"id": self.next_id(day), "kind": "listing", "title": "Spigen Ultra Hybrid case for iPhone 15",
                "description": "Spigen Ultra Hybrid: crystal-clear back, shock-absorbing TPU bumper, Air Cushion "
                               "Technology corners, raised lips protect screen and camera. Wireless-charging compatible.",
                "price": 15.99, "currency": "EUR", "category": "phone accessories", "seller": shop, "region": "EU",
                "language": "en"}


def truth(market: Marketplace) -> dict:
    honest = sorted({f"merchant:{s['name']}" for s in market.shops} | {f"creator:{c}" for c in market.creators}
                    | {f"chat:{u}" for u in market.chat_users}
                    | {"merchant:phone_case_hub_12", "merchant:case_corner_88", "merchant:vape_corner_uk",
                       "merchant:cloud_nine_vapes", "merchant:puff_palace"})
    return {
        "seed": SEED, "days": [{"file": f"day-{d}.jsonl", "date": (START + timedelta(days=d - 1)).isoformat()}
                               for d in range(1, DAYS + 1)],
        "rings": [{k: ring[k] for k in ("name", "identifier", "members", "labels")} | {"obfuscations": ring["forms"]}
                  for ring in RINGS],
        "re_registrations": [{k: reg[k] for k in ("banned", "account", "from_day", "forms")} for reg in RE_REGISTRATIONS],
        "template": {"name": "loyalty-refund voucher scam", "code_word": "BlueKey", "items_per_day": TEMPLATE_PER_DAY,
                     "first_emerging_day": 4, "accounts": market.template_accounts,
                     "items": {str(d): ids for d, ids in sorted(market.template_items.items())}},
        "steady": {"name": "disposable vapes (restricted, steady)", "items_per_day": [VAPES_PER_DAY] * DAYS,
                   "items": {str(d): ids for d, ids in sorted(market.vape_items.items())}},
        "scorer_drift": {"policy": "spam", "days": list(DRIFT_DAYS), "shift": 0.15, "first_alert_day": DRIFT_DAYS[0]},
        "honest_accounts": honest,
        "honest_lookalikes": [
            {"shared": f"DHL hotline {DHL}", "accounts": [f"merchant:{s['name']}" for s in market.shops if s["public"] == "dhl"],
             "excluded_by": "allow_list.txt, and max_accounts (more than 25 accounts)"},
            {"shared": f"platform support address {SUPPORT}",
             "accounts": [f"merchant:{s['name']}" for s in market.shops if s["public"] == "support"],
             "excluded_by": "allow_list.txt"},
            {"shared": "marketplace home pages (etsy.com, tokopedia.com, shopee.co.id)",
             "accounts": [f"merchant:{s['name']}" for s in market.shops if s["public"] == "marketplace"],
             "excluded_by": "public host without a path: no identifier (moderation.contacts.PUBLIC_NAMES)"},
            {"shared": "the maker's product description, no contact", "accounts":
             ["merchant:phone_case_hub_12", "merchant:case_corner_88"],
             "excluded_by": "near-duplicate text links only texts with an obfuscated contact or a flag of coordinated "
                            "abuse (near_duplicates=suspect)"},
            {"shared": "one disposable vape description, flagged restricted_item alike (with run files)", "accounts":
             ["merchant:vape_corner_uk", "merchant:cloud_nine_vapes", "merchant:puff_palace"],
             "excluded_by": "restricted_item is not a policy of coordinated abuse (text_link_policies)"},
        ],
        "labels": dict(sorted(market.labels.items())),
    }


def generate(out: Path = HERE) -> dict[str, bytes]:
    """Every committed data file, by name, as bytes."""
    market = Marketplace()
    files = {}
    for d in range(1, DAYS + 1):
        files[f"day-{d}.jsonl"] = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in market.day(d)).encode()
    files["bans.csv"] = ("account,banned_at,reason,contacts\n" + "".join(
        f"{b['account']},{b['banned_at']},\"{b['reason']}\",\"{b['contacts']}\"\n" for b in BANS)).encode()
    files["allow_list.txt"] = (f"# public identifiers several honest shops write: never a link\n{DHL}  # DHL Express hotline\n"
                               f"{SUPPORT}  # the marketplace's own support address\n").encode()
    files["truth.json"] = (json.dumps(truth(market), indent=1, ensure_ascii=False) + "\n").encode()
    return files


# -- the synthetic scorer ----------------------------------------------------------------------------
def _uniform(*parts) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


def synthetic_scores(item_id: str, labels: list[str], thresholds: dict[str, float], day: int) -> dict[str, float]:
    """The documented synthetic scorer (see the module docstring)."""
    scores = {}
    for policy, t in thresholds.items():
        u = _uniform(SEED, item_id, policy)
        score = t - 0.08 + 0.2 * u if policy in labels else 0.35 * u ** 3
        if policy == "spam" and day in DRIFT_DAYS:
            score += 0.15
        scores[policy] = round(min(score, 0.999), 5)
    return scores


def synthetic_run(dump: Path, out: Path, day: int, labels: dict[str, list[str]] | None = None) -> Path:
    """Write the synthetic scorer's run file for one dump, with the run-file writer (a manifest too)."""
    from moderation.batch import VerdictCache
    from moderation.items import Item, ReadLimits, read_items
    from moderation.model import model_profile
    from moderation.policy import load_policy
    from moderation.runfile import OutputFile, RunRecord, describe_input

    policy, labels = load_policy(), labels if labels is not None else json.loads((HERE / "truth.json").read_text())["labels"]
    thresholds = model_profile("default").thresholds
    provenance = {"model": "synthetic-scorer", "backend": "synthetic", "schema_id": policy.schema_id,
                  "policy_version": policy.version, "policy_sha": policy.sha}
    made_by = {**describe_input(dump, fmt="jsonl", columns={}, default_kind="listing", limits=ReadLimits()),
               "model": provenance, "records": {"scores": True, "scorer": "synthetic (eval_sets/synthetic_marketplace)"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = OutputFile(out, VerdictCache(1), made_by, restart=True)
    records = []
    for line, item in read_items(dump):
        if not isinstance(item, Item):
            continue
        scores = synthetic_scores(item.id, labels.get(item.id, []), thresholds, day)
        flagged = [p for p in policy.ids if scores[p] >= thresholds[p]]
        quote = item.text()[:40]
        verdict = {"decision": "remove" if flagged else "allow", "rationale": "synthetic scorer",
                   "violations": [{"policy": p, "severity": policy.entry(p).severity, "evidence": quote} for p in flagged]}
        records.append(RunRecord(id=item.id, line=line, kind=item.kind, content_sha=item.content_sha, verdict=verdict,
                                 scores={"violation": max(scores.values()), "policies": scores, "scorer": "synthetic"},
                                 flagged=flagged, provenance={**provenance, "latency_ms": 0, "cached": False}))
    writer.append(records)
    writer.close()
    return out


def synthetic_runs(out_dir: Path, dumps: Path = HERE) -> list[Path]:
    """The synthetic scorer's run files of the seven dumps, and thresholds.json (the shipped thresholds)."""
    from moderation.model import model_profile

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "thresholds.json").write_text(json.dumps(model_profile("default").thresholds, indent=1) + "\n")
    labels = json.loads((dumps / "truth.json").read_text())["labels"]
    return [synthetic_run(dumps / f"day-{d}.jsonl", out_dir / f"day-{d}.jsonl", d, labels) for d in range(1, DAYS + 1)]


# -- a large dump for memory and time measurements ------------------------------------------------
def big_dump(path: Path, rows: int, seed: int = SEED) -> int:
    """`rows` rows of marketplace traffic (honest shops at scale, the planted rings every day),
    streamed to `path`; returns the rows written. Not committed: for measurements only."""
    market = Marketplace(seed, shops=max(180, rows // 12), creators=max(20, rows // 500))
    written, day = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < rows:
            day = day % DAYS + 1
            for item in market.day(day):
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
                written += 1
                if written >= rows:
                    break
            market.labels.clear()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing them")
    parser.add_argument("--big", type=Path, help="write a large dump here (not committed) instead")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of --big (default 1,000,000)")
    parser.add_argument("--runs", type=Path, help="write the synthetic scorer's run files of the seven dumps here")
    args = parser.parse_args(argv)
    if args.big:
        print(f"wrote {big_dump(args.big, args.rows)} rows to {args.big}")
        return 0
    if args.runs:
        print("\n".join(str(p) for p in synthetic_runs(args.runs)))
        return 0
    files = generate()
    if args.check:
        stale = [name for name, data in files.items() if not (HERE / name).is_file() or (HERE / name).read_bytes() != data]
        print(f"stale: {stale}" if stale else "up to date")
        return 1 if stale else 0
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE} ({sum(map(len, files.values())) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
