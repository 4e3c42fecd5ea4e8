"""Regenerate eval_sets/marketplace/CARD.md from the data."""

from moderation.evalsets import MARKETPLACE_DIR, data_card, load_marketplace

if __name__ == "__main__":
    path = MARKETPLACE_DIR / "CARD.md"
    path.write_text(data_card(load_marketplace()) + "\n")
    print(f"wrote {path}")
