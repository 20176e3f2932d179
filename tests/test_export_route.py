"""`GET /runs/{id}/export` and `mathrl export` over the real API app (API-only mode, real
store, real HTTP with a token) and a real LoRA adapter of the tiny model on disk: which step,
the errors, the rewritten base, the merged model's outputs, and a safe, all-or-nothing unpack.
The same verbs against a running stack, compared with vLLM: tests/test_service.py."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import httpx
import pytest
import torch
from api_server import served
from conftest import lora_policy
from typer.testing import CliRunner

from orchestrator.cli.client import ApiError, MathrlClient
from orchestrator.cli.commands import app as cli_app
from orchestrator.cli.export import download
from orchestrator.service.api.app import create_app
from orchestrator.service.api.limits import ApiPolicy
from orchestrator.service.store import RunStore

TOKEN = "export-token"
MODULES = ["q_proj", "v_proj", "down_proj"]


@pytest.fixture(scope="module")
def api(tiny_model_dir, tmp_path_factory):
    """(url, run with adapters of steps 2 and 3, run without any, the submitted base name).
    The base is submitted as a symlink to the tiny model, so the name the run gave and the
    path the learner loaded (written in its adapter config) differ, as a hub id and a cache
    snapshot do."""
    home = tmp_path_factory.mktemp("export-api")
    base = home / "base-link"
    base.symlink_to(tiny_model_dir)
    store = RunStore(home / "runs.db")
    cfg = {"name": "exp", "model": {"name_or_path": str(base), "dtype": "float32"}}
    run = store.create_run("exp", cfg, 3)
    store.set_run_dir(run, str(home / "runs" / run))
    for step in (2, 3):
        torch.manual_seed(step)
        lora_policy(tiny_model_dir, MODULES).save_pretrained(
            home / "runs" / run / "adapters" / f"step-{step}")
    bare = store.create_run("bare", cfg, 3)
    with served(create_app(store, policy=ApiPolicy(token=TOKEN))) as url:
        yield url, run, bare, str(base), home
    store.close()


def _client(url):
    return MathrlClient(url, token=TOKEN)


def test_errors_name_what_is_there(api, tmp_path):
    url, run, bare, base, home = api
    h = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/runs/{run}/export").status_code == 401
    assert httpx.get(f"{url}/runs/nope/export", headers=h).status_code == 404
    r = httpx.get(f"{url}/runs/{bare}/export", headers=h)
    assert r.status_code == 409 and "no adapter" in r.json()["detail"]
    r = httpx.get(f"{url}/runs/{run}/export", params={"step": 1}, headers=h)
    assert r.status_code == 404 and "available: [2, 3]" in r.json()["detail"]
    with pytest.raises(ApiError) as e:
        download(_client(url), run, tmp_path / "out", step=1)
    assert e.value.status == 404
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    # Nothing of the failed exports is left in the server's temp folders (API-only mode: the
    # system's; `mathrl up`: the work dir's) either.
    assert not list(Path(tempfile.gettempdir(), "exports").glob(f"{run}-*"))
    assert not list(Path(tempfile.gettempdir(), "exports").glob(f"{bare}-*"))


def test_adapter_names_the_submitted_base_and_loads(api, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    url, run, bare, base, home = api
    info = download(_client(url), run, tmp_path / "adapter")  # the newest by default
    assert info == {"step": 3, "kind": "adapter", "base": base}
    out = tmp_path / "adapter"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                     "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    src = home / "runs" / run / "adapters" / "step-3"
    learner = json.loads((src / "adapter_config.json").read_text())
    assert learner["base_model_name_or_path"] != base  # the learner's resolved path
    assert config == {**learner, "base_model_name_or_path": base}
    assert (out / "adapter_model.safetensors").read_bytes() == \
        (src / "adapter_model.safetensors").read_bytes()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        config["base_model_name_or_path"]), str(out))
    assert model.peft_config["default"].r == 8
    info = download(_client(url), run, tmp_path / "step2", step=2)
    assert info["step"] == 2


def test_merged_matches_base_plus_adapter(api, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url, run, bare, base, home = api
    out = tmp_path / "merged"
    out.mkdir()  # an empty folder is fine
    assert download(_client(url), run, out, merge=True)["kind"] == "merged"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names, names
    assert not any(n.startswith("adapter_") for n in names)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.float32  # the run's model.dtype
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                    str(home / "runs" / run / "adapters" / "step-3"))
    ids = AutoTokenizer.from_pretrained(out)("What is 12 + 30?", return_tensors="pt").input_ids
    with torch.no_grad():
        got, want = merged(ids).logits, ref(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter is in it


def test_cli_refuses_a_folder_with_files_and_unpacks_safely(api, tmp_path):
    url, run, bare, base, home = api
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    r = CliRunner().invoke(cli_app, ["export", run, "--out", str(full), "--url", url])
    assert r.exit_code == 2 and "exists and is not empty" in r.output
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    # A hostile archive (a `..` member) is refused before anything lands outside the folder.
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))

    class Evil(MathrlClient):
        def export(self, run_id, dest, **kw):
            open(dest, "wb").write(evil.getvalue())  # noqa: SIM115
            return {"step": 1, "kind": "adapter", "base": "x"}

    with pytest.raises(tarfile.FilterError):
        download(Evil(url, token=TOKEN), run, tmp_path / "evil" / "out")
    assert list((tmp_path / "evil").iterdir()) == []
    ok = CliRunner().invoke(cli_app, ["export", run, "--out", str(tmp_path / "cli"),
                                      "--url", url], env={"MATHRL_API_TOKEN": TOKEN})
    assert ok.exit_code == 0, ok.output
    assert f"adapter of run {run} at step 3 (base {base})" in ok.output
