"""Case checks in and out: JSONL (the export contract), a Hugging Face dataset, Label Studio.

Label Studio: a queue's open checks become tasks whose `data` holds the item text and whose
`predictions` hold the model verdict as two choices results (`decision`, single choice;
`policies`, multiple), matching `label_config` (the queue's taxonomy). Annotations exported from Label Studio come back
as decisions: the same decision and policies as the model is `accept`, anything else
`correct`, a cancelled (skipped) annotation `skip`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from moderation.errors import InputError
from moderation.items import Item
from moderation.review.store import CaseCheck, Store
from moderation.review.verdicts import Taxonomy, corrected_verdict
from moderation.schema import DECISIONS

logger = logging.getLogger(__name__)

def label_config(taxonomy: Taxonomy) -> str:
    """The Label Studio labelling config for a queue's taxonomy: decision, its policies, notes."""
    return "\n".join([
        "<View>",
        '  <Text name="text" value="$text"/>',
        '  <Choices name="decision" toName="text" choice="single" showInLine="true">',
        *[f"    <Choice value={quoteattr(d)}/>" for d in DECISIONS],
        "  </Choices>",
        '  <Choices name="policies" toName="text" choice="multiple">',
        *[f"    <Choice value={quoteattr(p)}/>" for p in taxonomy.ids],
        "  </Choices>",
        '  <TextArea name="notes" toName="text" editable="true"/>',
        "</View>",
    ])


def finished(store: Store, queue: str | None = None) -> list[CaseCheck]:
    return store.checks(queue, status="done")


def export_jsonl(checks: Iterable[CaseCheck], path: str | Path) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for check in checks:
            fh.write(json.dumps(check.export_record(), ensure_ascii=False) + "\n")
            count += 1
    return count


def export_hf(checks: Iterable[CaseCheck], path: str | Path) -> int:
    """A `datasets` dataset (save_to_disk). The contract's columns; `item` and `provenance`,
    whose keys vary by kind and backend, are JSON text; verdicts are structs."""
    from datasets import Dataset

    rows = []
    for check in checks:
        record = check.export_record()
        rows.append({**record, "item": json.dumps(record["item"], ensure_ascii=False),
                     "provenance": json.dumps(record["provenance"], ensure_ascii=False)})
    if not rows:
        raise InputError("no finished case checks to export")
    Dataset.from_list(rows).save_to_disk(str(path))
    return len(rows)


def item_text(item: dict[str, Any]) -> str:
    """The item as labelled lines of text, for annotators."""
    lines = [f"[{item['kind']}] {item['id']}"]
    for name, value in item.items():
        if name in ("id", "kind"):
            continue
        if name == "messages":
            value = "\n".join(f"  {m.get('user') or '?'}: {m['text']}" for m in value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def _choices(name: str, values: list[str]) -> dict[str, Any]:
    return {"id": f"{name}-pred", "from_name": name, "to_name": "text", "type": "choices", "value": {"choices": values}}


def label_studio_tasks(checks: Iterable[CaseCheck]) -> list[dict[str, Any]]:
    """Label Studio import tasks for open case checks, the model verdict as pre-annotation."""
    tasks = []
    for check in checks:
        task = {"data": {"text": item_text(check.item), "check_id": check.check_id, "queue": check.queue,
                         "item_id": check.item["id"], "kind": check.item["kind"]}}
        verdict = check.model_verdict
        if verdict:
            policies = [v["policy"] for v in verdict["violations"]]
            task["predictions"] = [{"model_version": str(check.provenance.get("model") or "unknown"),
                                    "result": [_choices("decision", [verdict["decision"]])]
                                    + ([_choices("policies", policies)] if policies else [])}]
        tasks.append(task)
    return tasks


def one_taxonomy(store: Store, checks: list[CaseCheck]) -> Taxonomy:
    """The taxonomy the checks' queues share (one labelling config serves them all).

    Raises:
        InputError: no checks, or checks from queues of different taxonomies.
    """
    taxonomies = {store.taxonomy(queue) for queue in dict.fromkeys(c.queue for c in checks)}
    if len(taxonomies) != 1:
        raise InputError("no case checks to export" if not taxonomies else
                         "these case checks come from queues of different taxonomies; export one --queue at a time")
    return taxonomies.pop()


def export_label_studio(checks: Iterable[CaseCheck], path: str | Path, taxonomy: Taxonomy) -> tuple[int, Path]:
    """Write tasks JSON and, beside it, the labelling config of their taxonomy (`*.label_config.xml`)."""
    tasks = label_studio_tasks(c for c in checks if c.status != "done")
    Path(path).write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config = Path(path).with_suffix(".label_config.xml")
    config.write_text(label_config(taxonomy) + "\n", encoding="utf-8")
    return len(tasks), config


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"label-studio:{who if who is not None else 'unknown'}"


def _read_result(result: list[dict[str, Any]]) -> tuple[str | None, list[str], str]:
    decision, policies, notes = None, [], ""
    for region in result:
        value = region.get("value") or {}
        if region.get("from_name") == "decision" and value.get("choices"):
            decision = value["choices"][0]
        elif region.get("from_name") == "policies":
            policies = list(value.get("choices") or [])
        elif region.get("from_name") == "notes" and value.get("text"):
            notes = "\n".join(value["text"])
    return decision, policies, notes


def annotation_decision(check: CaseCheck, annotation: dict[str, Any], taxonomy: Taxonomy) -> tuple[str, dict | None, str]:
    """(review decision, reviewer verdict, notes) for one Label Studio annotation of a check of a queue of that taxonomy."""
    if annotation.get("was_cancelled"):
        return "skip", None, ""
    decision, policies, notes = _read_result(annotation.get("result") or [])
    if decision is None:
        raise InputError(f"annotation {annotation.get('id')} of check {check.check_id} has no decision")
    model = check.model_verdict
    if model and decision == model["decision"] and set(policies) == {v["policy"] for v in model["violations"]}:
        return "accept", model, notes
    verdict = corrected_verdict(Item.from_record(check.item), model, decision, policies if decision != "allow" else [],
                                taxonomy)
    return "correct", verdict, notes


def import_label_studio(store: Store, path: str | Path) -> dict[str, int]:
    """Store the annotations of a Label Studio JSON export. Returns counts by outcome."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read Label Studio export {path}: {exc}") from None
    if not isinstance(tasks, list):
        raise InputError(f"{path}: a Label Studio JSON export is a list of tasks")
    counts = {"imported": 0, "already_done": 0, "invalid": 0, "unannotated": 0, "unknown_check": 0}
    for task in tasks:
        check_id = (task.get("data") or {}).get("check_id")
        annotations = sorted((a for a in task.get("annotations") or []), key=lambda a: a.get("updated_at") or "")
        if not annotations:
            counts["unannotated"] += 1
            continue
        try:
            check = store.get(str(check_id))
        except InputError:
            counts["unknown_check"] += 1
            continue
        annotation = annotations[-1]  # the latest word on the task
        try:
            decision, verdict, notes = annotation_decision(check, annotation, store.taxonomy(check.queue))
        except InputError as exc:  # e.g. a labelling config with other choices: report, go on
            logger.warning("task %s (check %s): %s", task.get("id"), check.check_id, exc)
            counts["invalid"] += 1
            continue
        ok = store.import_decision(check.check_id, _annotator(annotation), decision, verdict, notes, source=str(path))
        counts["imported" if ok else "already_done"] += 1
    logger.info("Label Studio import from %s: %s", path, counts)
    return counts
