"""Regenerate the data cards: eval_sets/marketplace/CARD.md, eval_sets/marketplace_corpus/CARD.md and
eval_sets/evidence_gold/CARD.md."""

from moderation.evalsets import (
    CORPUS_CARD_HEADER,
    CORPUS_DIR,
    EVIDENCE_GOLD_CARD_HEADER,
    EVIDENCE_GOLD_DIR,
    MARKETPLACE_DIR,
    data_card,
    load_corpus,
    load_evidence_gold,
    load_marketplace,
)

if __name__ == "__main__":
    for path, card in ((MARKETPLACE_DIR / "CARD.md", data_card(load_marketplace())),
                       (CORPUS_DIR / "CARD.md", data_card(load_corpus(), CORPUS_CARD_HEADER)),
                       (EVIDENCE_GOLD_DIR / "CARD.md", data_card(load_evidence_gold(), EVIDENCE_GOLD_CARD_HEADER))):
        path.write_text(card + "\n")
        print(f"wrote {path}")
