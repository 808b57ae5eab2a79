"""The two-stage protocol's first stage: its score, presence.jsonl, and when a later eval reuses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from visualrft_lite.data.records import Record
from visualrft_lite.presence import (
    PresenceCache,
    adapter_digest,
    gate_answers,
    presence_metrics,
    reuse_note,
)
from visualrft_lite.rundir import MARKER, EvalDir, prepare_output_dir

KEY = {"model": {"model": "Qwen/Qwen2-VL-2B-Instruct", "revision": "abc"}, "adapter": None,
       "gate": "Is there {a_category} in the image?", "asked": {"quant": "4bit", "max_new_tokens": 256}}


def prompt(rec: Record) -> str:
    return f"Is there a {rec.fields['category']} in the image?"


def records(folder: Path, n: int, categories=("bus", "cat")) -> list[Record]:
    """n images x categories; image k is a solid colour of its own (different bytes)."""
    out = []
    for k in range(n):
        path = folder / f"{k}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6), (10 * k, 0, 0)).save(path)
        for c in categories:
            out.append(Record(str(path), "detect", [[0, 0, 4, 4]] if (k + len(c)) % 2 else [], {"category": c},
                              image_size=(8, 6)))
    return out


class Asker:
    """A stand-in for the model: "yes" for buses, "no" otherwise; counts what it is asked."""

    def __init__(self, fail_after_batches: int | None = None, batch: int = 2) -> None:
        self.asked: list[str] = []
        self.fail_after, self.batch = fail_after_batches, batch

    def __call__(self, chosen, on_batch):
        out = []
        for b, start in enumerate(range(0, len(chosen), self.batch)):
            if self.fail_after is not None and b == self.fail_after:
                raise KeyboardInterrupt  # stopped mid-stage
            done = [("yes" if r.fields["category"] == "bus" else "no", (28, 28), None)
                    for r in chosen[start:start + self.batch]]
            self.asked += [f"{Path(r.image).name}:{r.fields['category']}" for r in chosen[start:start + self.batch]]
            out.extend(done)
            on_batch(start, done)
        return out


def eval_folder(root: Path, name: str) -> Path:
    out = root / name
    prepare_output_dir(out, kind="eval", force=False)
    return out


def run(out: Path, recs: list[Record], *, key=KEY, reuse=True, asker=None) -> tuple[list, int, Asker, PresenceCache]:
    asker = asker or Asker()
    cache = PresenceCache.open(out, key, prompt, reuse=reuse)
    answers, reused = gate_answers(recs, [bool(r.solution) for r in recs], asker, cache)
    return answers, reused, asker, cache


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / EvalDir.PRESENCE).read_text().splitlines()]


# ----------------------------------------------------------------------------- the score


def test_presence_metrics_score_the_decision_to_ask_for_boxes():
    # truths  T T F F T; answers yes no yes no maybe -> asked T F T F T (an unclear answer is asked)
    # TP = records 0 and 4, FP = record 2, FN = record 1, TN = record 3:
    # accuracy 3/5, precision 2/3, recall 2/3
    m = presence_metrics([True, True, False, False, True], ["yes", "No.", "Yes, there is", "no", "maybe"])
    assert (m["n"], m["yes"], m["no"], m["unclear"], m["present"]) == (5, 2, 2, 1, 3)
    assert (m["accuracy"], m["precision"], m["recall"]) == pytest.approx((0.6, 2 / 3, 2 / 3))


def test_presence_metrics_without_a_denominator_are_none():
    # every answer "no" on negatives: nothing asked (precision undefined), nothing present (recall undefined)
    m = presence_metrics([False, False], ["no", "no"])
    assert (m["accuracy"], m["precision"], m["recall"]) == (1.0, None, None)


# ----------------------------------------------------------------------------- presence.jsonl and reuse


def test_the_first_eval_writes_every_answer_in_record_order(tmp_path):
    recs = records(tmp_path / "img", 3)
    out = eval_folder(tmp_path / "runs", "eval-a")
    answers, reused, asker, _ = run(out, recs)
    assert reused == 0 and len(asker.asked) == 6
    assert [a[0] for a in answers] == ["yes", "no"] * 3
    rows = lines(out)
    assert [(Path(r["image"]).name, r["category"], r["present"]) for r in rows] == [
        (f"{k}.png", c, c == "bus") for k in range(3) for c in ("bus", "cat")]
    assert all(r["truth"] == bool(rec.solution) for r, rec in zip(rows, recs))


def test_a_later_eval_beside_it_reuses_every_answer_and_says_so(tmp_path):
    recs = records(tmp_path / "img", 3)
    first = eval_folder(tmp_path / "runs", "eval-a")
    run(first, recs)
    later = eval_folder(tmp_path / "runs", "eval-b")
    answers, reused, asker, cache = run(later, recs)
    assert reused == 6 and asker.asked == []
    assert [a[0] for a in answers] == ["yes", "no"] * 3 and answers[0][1] == (28, 28)
    assert lines(later) == lines(first)  # the later folder holds the whole split too
    note = reuse_note(cache, reused, len(recs))
    assert note == (f"stage 1: reusing 6 of 6 presence answers from {first.resolve()} (same model, adapter, gate "
                    f"prompt and images); --force asks again")


@pytest.mark.parametrize("part, value", [
    ("model", {"model": "Qwen/Qwen2-VL-2B-Instruct", "revision": "def"}),  # the hub model was updated
    ("adapter", "0" * 64),  # another adapter (or the same run's later checkpoint)
    ("gate", "Does the image show {a_category}?"),  # another gate question
    ("asked", {"quant": "none", "max_new_tokens": 256}),  # the base unquantised
])
def test_any_change_to_the_key_asks_again(tmp_path, part, value):
    recs = records(tmp_path / "img", 2)
    run(eval_folder(tmp_path / "runs", "eval-a"), recs)
    _, reused, asker, _ = run(eval_folder(tmp_path / "runs", "eval-b"), recs, key={**KEY, part: value})
    assert reused == 0 and len(asker.asked) == 4


def test_force_asks_again(tmp_path):
    recs = records(tmp_path / "img", 2)
    run(eval_folder(tmp_path / "runs", "eval-a"), recs)
    _, reused, asker, _ = run(eval_folder(tmp_path / "runs", "eval-b"), recs, reuse=False)
    assert reused == 0 and len(asker.asked) == 4


def test_a_subset_reuses_its_part_and_a_larger_split_asks_only_what_is_new(tmp_path):
    run(eval_folder(tmp_path / "runs", "eval-small"), records(tmp_path / "img", 2))  # images 0, 1
    _, reused, asker, _ = run(eval_folder(tmp_path / "runs", "eval-large"), records(tmp_path / "img", 3))
    assert reused == 4 and asker.asked == ["2.png:bus", "2.png:cat"]
    _, reused, asker, _ = run(eval_folder(tmp_path / "runs", "eval-one"), records(tmp_path / "img", 1))
    assert reused == 2 and asker.asked == []


def test_a_changed_image_or_category_is_asked_again(tmp_path):
    recs = records(tmp_path / "img", 2)
    run(eval_folder(tmp_path / "runs", "eval-a"), recs)
    Image.new("RGB", (8, 6), (0, 200, 0)).save(tmp_path / "img" / "1.png")  # same name, other pixels
    _, reused, asker, _ = run(eval_folder(tmp_path / "runs", "eval-b"), records(tmp_path / "img", 2))
    assert reused == 2 and asker.asked == ["1.png:bus", "1.png:cat"]
    _, _, asker, _ = run(eval_folder(tmp_path / "runs", "eval-c"), records(tmp_path / "img", 2, ("dog",)))
    assert len(asker.asked) == 2  # the gate question names the category


def test_a_stopped_eval_keeps_what_it_asked_and_its_rerun_reuses_it(tmp_path):
    # stopped during the second batch: the first batch's 2 answers are on disk already
    recs = records(tmp_path / "img", 3)
    out = eval_folder(tmp_path / "runs", "eval-a")
    with pytest.raises(KeyboardInterrupt):
        run(out, recs, asker=Asker(fail_after_batches=1))
    assert [(Path(r["image"]).name, r["category"]) for r in lines(out)] == [("0.png", "bus"), ("0.png", "cat")]
    with (out / EvalDir.PRESENCE).open("a") as f:
        f.write('{"key": "torn')  # a line cut short by the stop
    # the same command again (same --out, no --force): the folder is reused, its answers too
    assert "stopped before the end" in prepare_output_dir(out, kind="eval", force=False)
    _, reused, asker, _ = run(out, recs)
    assert reused == 2 and len(asker.asked) == 4 and len(lines(out)) == 6


def test_force_on_a_stopped_eval_deletes_its_answers(tmp_path):
    out = eval_folder(tmp_path / "runs", "eval-a")
    with pytest.raises(KeyboardInterrupt):
        run(out, records(tmp_path / "img", 3), asker=Asker(fail_after_batches=1))
    prepare_output_dir(out, kind="eval", force=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


def test_a_finished_eval_is_not_reused_in_place(tmp_path):
    out = eval_folder(tmp_path / "runs", "eval-a")
    run(out, records(tmp_path / "img", 1))
    (out / EvalDir.METRICS).write_text("{}")
    (out / EvalDir.PREDICTIONS).write_text("")
    from visualrft_lite.errors import UserError

    with pytest.raises(UserError, match="not empty"):
        prepare_output_dir(out, kind="eval", force=False)


def test_a_folder_vrft_lite_did_not_write_is_not_read(tmp_path):
    # a presence.jsonl in a user's folder beside the eval (no marker, not an eval) is never a source
    recs = records(tmp_path / "img", 1)
    out = eval_folder(tmp_path / "runs", "eval-a")
    run(out, recs)
    mine = tmp_path / "runs" / "notes"
    mine.mkdir()
    (mine / EvalDir.PRESENCE).write_text((out / EvalDir.PRESENCE).read_text())
    (out / EvalDir.PRESENCE).unlink()
    (out / MARKER).unlink()
    _, reused, _, _ = run(eval_folder(tmp_path / "runs", "eval-b"), recs)
    assert reused == 0


def test_an_unreadable_image_is_not_kept_as_an_answer(tmp_path):
    recs = records(tmp_path / "img", 1)
    out = eval_folder(tmp_path / "runs", "eval-a")
    on_disk = []

    def refuse_cats(chosen, on_batch):
        done = [("yes", (28, 28), None) if r.fields["category"] == "bus" else ("", None, "cannot read")
                for r in chosen]
        on_batch(0, done)
        on_disk.append([r["category"] for r in lines(out)])  # what a stop right now would leave
        return done

    cache = PresenceCache.open(out, KEY, prompt, reuse=True)
    answers, _ = gate_answers(recs, [False, False], refuse_cats, cache)
    assert answers[1] == ("", None, "cannot read")
    assert on_disk == [["bus"]] and [r["category"] for r in lines(out)] == ["bus"]


def test_adapter_digest_follows_the_files(tmp_path):
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 64}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-1")
    first = adapter_digest(adapter)
    (adapter / "README.md").write_text("notes")  # not an adapter file
    assert adapter_digest(adapter) == first
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-2")
    assert adapter_digest(adapter) != first
    assert adapter_digest(None) is None


def test_model_identity_of_a_local_folder_and_a_cached_hub_model(tmp_path, monkeypatch):
    from visualrft_lite.modeling import identity

    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (folder / "model.safetensors").write_bytes(b"1234")
    first = identity.model_identity(str(folder))
    assert first["model"] == str(folder.resolve())
    (folder / "model.safetensors").write_bytes(b"12345")  # re-exported: another size
    assert identity.model_identity(str(folder))["revision"] != first["revision"]
    # a hub id: the snapshot commit the cache holds
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2-VL-2B-Instruct" / "snapshots" / "c0ffee"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--Qwen--Qwen2-VL-2B-Instruct" / "refs").mkdir()
    (tmp_path / "hub" / "models--Qwen--Qwen2-VL-2B-Instruct" / "refs" / "main").write_text("c0ffee")
    monkeypatch.setattr(identity, "hub_cache_dir", lambda: str(tmp_path / "hub"))
    assert identity.model_identity("Qwen/Qwen2-VL-2B-Instruct") == {"model": "Qwen/Qwen2-VL-2B-Instruct",
                                                                     "revision": "c0ffee"}
