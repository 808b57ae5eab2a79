"""Model loading fails fast and says what to do, and an adapter only runs on its own base
(`visualrft_lite.modeling.load`).

    hub         an unknown id offline, a refused connection, a hub answering an error: one line
                naming HF_HUB_OFFLINE=1 / a local directory, after at most one request
    cache       a hub id already in the Hugging Face cache loads without asking the hub
    adapter     trained on another base (another tiny model of the same shapes, or recorded
                shapes that differ): one line naming both, unless allow_mismatch
    paths       a base recorded relative to where a run started (runs/X/sft_model) is found
                from any folder, and new adapters record it absolute
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke

from visualrft_lite import checkpoint as ckpt
from visualrft_lite.config import LoraConfig, ModelConfig
from visualrft_lite.errors import UserError
from visualrft_lite.modeling import adapters as madapters
from visualrft_lite.modeling import hub as mhub
from visualrft_lite.modeling import load as mload

LORA = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def cpu(name) -> ModelConfig:
    return ModelConfig(name=str(name), quant="none", device="cpu")


# ----------------------------------------------------------------------------- the hub


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset for one test (the suite runs offline, and huggingface_hub read that on import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


class CountingHub(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the hub: answers every request with `status`, counts them."""

    status = 500
    headers_out: dict[str, str] = {}
    requests: list[str] = []

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        type(self).requests.append(self.path)
        self.send_response(self.status)
        for k, v in self.headers_out.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def local_hub(online, monkeypatch):
    CountingHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield CountingHub
    server.shutdown()


def test_an_unknown_id_offline_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as info:
        mhub.check_model_available("nobody/no-such-model")
    message = str(info.value)
    assert "\n" not in message and "HF_HUB_OFFLINE=1" in message and "local directory" in message


def test_a_refused_connection_is_one_line_without_retries(online, monkeypatch):
    import huggingface_hub

    calls = []
    real = huggingface_hub.get_hf_file_metadata

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", counted)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(UserError, match=r"cannot reach the Hugging Face hub at http://127.0.0.1:9.*HF_HUB_OFFLINE=1"):
        mhub.check_model_available("Qwen/Qwen2-VL-2B-Instruct")
    assert len(calls) == 1 and calls[0]["retry_on_errors"] is False


@pytest.mark.parametrize("status, headers, needle", [
    (500, {}, "answered 500"),                                      # a hub (or proxy) in trouble
    (503, {}, "answered 503"),                                      # the status huggingface_hub retries by default
    (404, {"X-Error-Code": "RepoNotFound"}, "not found on"),        # a typo in model.name
    (401, {"X-Error-Code": "GatedRepo"}, "gated"),                  # a licence to accept
])
def test_a_hub_answering_an_error_is_asked_once_and_one_line(local_hub, status, headers, needle):
    local_hub.status, local_hub.headers_out = status, headers
    with pytest.raises(UserError, match=needle) as info:
        mhub.check_model_available("org/model")
    assert "\n" not in str(info.value)
    assert len(local_hub.requests) == 1  # no retry storm


def test_the_cli_fails_before_loading_anything_with_one_line(online, monkeypatch, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = invoke("predict", tmp_path / "x.png", "--task", "classify", "--model", "nobody/nothing",
                    "--set", "model.quant=none")
    assert_one_line_error(result, "HF_HUB_OFFLINE=1")
    assert "Retry" not in result.output and "retry" not in result.output


@pytest.mark.parametrize("name", ["./missing-model", "runs/x/sft_model", "/no/such/dir"])
def test_a_missing_local_directory_is_one_line(name):
    with pytest.raises(UserError, match="not found"):
        mhub.check_model_available(name)


def test_a_cached_hub_model_loads_offline_without_asking_the_hub(tiny_model_dir, tmp_path, monkeypatch):
    # the Hugging Face cache layout: models--org--name/{refs/main, snapshots/<sha>/...}
    repo = tmp_path / "hf-cache" / "models--someone--tiny-vl"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert mhub.check_model_available("someone/tiny-vl").where == "cache"
    loaded = mload.load_base(cpu("someone/tiny-vl"))
    assert loaded.name == "someone/tiny-vl" and loaded.processor is not None
    # the snapshot folder and the id are the same model to the adapter check
    assert madapters.base_identity(str(repo / "snapshots" / "0123abcd")) == "someone/tiny-vl"


# ----------------------------------------------------------------------------- adapter <-> base


@pytest.fixture(scope="module")
def other_tiny(tiny_model_dir, tmp_path_factory) -> Path:
    """Another tiny model: same shapes and processor, different random weights (seed 1)."""
    from visualrft_lite.modeling.tiny import random_tiny_model

    out = tmp_path_factory.mktemp("other") / "tiny-seed1"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("*.safetensors"))
    random_tiny_model(seed=1).save_pretrained(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """runs/X/final of a run on the seed-0 tiny model, saved the way train saves it."""
    run = tmp_path_factory.mktemp("run")
    loaded = mload.load_base(cpu(tiny_model_dir))
    mload.add_lora(loaded, LORA, gradient_checkpointing=False)
    return ckpt.save_final(run, loaded.model)


def test_an_adapter_loads_on_its_own_base_by_any_name(tiny_model_dir, trained_adapter):
    for name in (tiny_model_dir, "vrft-lite/tiny-qwen2-vl", "tiny"):  # a path and the aliases
        loaded = mload.load_base(cpu(name))
        mload.load_adapter(loaded, trained_adapter)
        assert hasattr(loaded.model, "peft_config")


def test_an_adapter_on_another_base_of_the_same_shapes_is_one_line(other_tiny, trained_adapter, tiny_model_dir):
    loaded = mload.load_base(cpu(other_tiny))
    with pytest.raises(UserError) as info:
        mload.load_adapter(loaded, trained_adapter)
    message = str(info.value)
    assert "\n" not in message and "does not fit base" in message
    assert str(other_tiny) in message and str(tiny_model_dir) in message and madapters.MISMATCH_FLAG in message
    assert not hasattr(loaded.model, "peft_config")  # nothing was attached


def test_allow_mismatch_loads_it_with_a_warning(other_tiny, trained_adapter, capsys):
    loaded = mload.load_base(cpu(other_tiny))
    mload.load_adapter(loaded, trained_adapter, allow_mismatch=True)
    assert hasattr(loaded.model, "peft_config")
    assert "warning: adapter" in capsys.readouterr().err


def test_recorded_shapes_that_differ_are_named(tiny_model_dir, trained_adapter, tmp_path):
    adapter = tmp_path / "final"
    shutil.copytree(trained_adapter, adapter)
    record = json.loads((adapter / madapters.BASE_RECORD).read_text())
    assert record["fingerprint"]["text.hidden_size"] == 128  # what the tiny model has
    record["fingerprint"]["text.hidden_size"] = 1536  # as if trained on the 2B
    (adapter / madapters.BASE_RECORD).write_text(json.dumps(record))
    loaded = mload.load_base(cpu(tiny_model_dir))
    with pytest.raises(UserError, match="text.hidden_size 1536 vs 128"):
        mload.load_adapter(loaded, adapter)


def test_an_adapter_without_a_record_is_checked_by_its_config_name(other_tiny, trained_adapter, tmp_path):
    # adapters saved by peft alone (or by older versions) carry only base_model_name_or_path
    adapter = tmp_path / "plain"
    shutil.copytree(trained_adapter, adapter)
    (adapter / madapters.BASE_RECORD).unlink()
    loaded = mload.load_base(cpu(other_tiny))
    with pytest.raises(UserError, match="does not fit base"):
        mload.load_adapter(loaded, adapter)


# ----------------------------------------------------------------------------- recorded paths


def sft_run(project: Path, tiny_model_dir: Path, monkeypatch) -> Path:
    """A run started from `project` whose GRPO adapter sits on runs/X/sft_model, recorded relative."""
    run = project / "runs" / "X"
    shutil.copytree(tiny_model_dir, run / "sft_model")
    monkeypatch.chdir(project)
    loaded = mload.load_base(cpu("runs/X/sft_model"))
    mload.add_lora(loaded, LORA, gradient_checkpointing=False)
    loaded.model.save_pretrained(str(run / "final"))  # what peft alone records: the relative path
    return run


def test_a_relative_base_is_found_from_another_folder(tmp_path, tiny_model_dir, monkeypatch):
    run = sft_run(tmp_path / "project", tiny_model_dir, monkeypatch)
    adapter_cfg = json.loads((run / "final" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "runs/X/sft_model"  # the reported bug's input
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    base = madapters.adapter_base_name(run / "final")
    assert base == str(run / "sft_model")
    loaded = mload.load_base(cpu(base))
    mload.load_adapter(loaded, run / "final")  # and the agreement check sees the same base


def test_a_moved_run_still_finds_its_base(tmp_path, tiny_model_dir, monkeypatch):
    run = sft_run(tmp_path / "project", tiny_model_dir, monkeypatch)
    moved = tmp_path / "archive" / "X"
    moved.parent.mkdir()
    shutil.move(str(run), str(moved))
    monkeypatch.chdir(tmp_path)
    assert madapters.adapter_base_name(moved / "final") == str(moved / "sft_model")


def test_new_adapters_record_their_base_absolute(tmp_path, tiny_model_dir, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(tiny_model_dir, project / "runs" / "X" / "sft_model")
    monkeypatch.chdir(project)
    loaded = mload.load_base(cpu("runs/X/sft_model"))
    mload.add_lora(loaded, LORA, gradient_checkpointing=False)
    step = ckpt.save_checkpoint(Path("runs/X"), 1, loaded.model, {"step": 1}, keep=0)
    final = ckpt.save_final(Path("runs/X"), loaded.model)
    for folder in (step, final):
        recorded = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert recorded == str(project / "runs" / "X" / "sft_model")
        assert ckpt.verify_checkpoint(folder) is None if folder == step else True  # manifest still matches
