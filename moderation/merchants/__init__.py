"""Merchant account health: item verdicts -> strikes -> decayed points, tiers, escalations; appeals;
reports; fairness monitoring. Configured by prompts/enforcement.yaml; stored in the case-check store."""
