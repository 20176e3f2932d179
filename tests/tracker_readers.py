"""Read back what each tracker wrote, with that library's own reader or record schema."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def tensorboard_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} through TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _wandb_records(path: Path):
    """The records of a `.wandb` transaction log, decoded with wandb's own protobuf schema.

    wandb >= 0.19 reads these files only in its Go core, so the framing (a LevelDB-style log:
    a 7-byte file header, then 32 KiB blocks of [crc32c:4][length:2][type:1] chunks) is read
    here; the records inside are wandb's `Record` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        chunks = chunk if kind in (1, 2) else chunks + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL or LAST ends it
            rec = pb.Record()
            rec.ParseFromString(chunks)
            yield rec


def wandb_run(run_root: Path) -> dict:
    """An offline run under `<run_root>/wandb`: its name, config, history and exit code."""
    (path,) = (run_root / "wandb").glob("offline-run-*/run-*.wandb")
    out: dict = {"history": {}, "config": {}, "name": None, "exit_code": None}
    for rec in _wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["name"] = rec.run.display_name
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                   for i in rec.history.item}
            step = int(row.pop("_step", rec.history.step.num))
            out["history"].setdefault(step, {}).update(
                {k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


def mlflow_run(tracking_uri: str, run_name: str, experiment: str = "mathrl") -> dict:
    """Status, params and {key: {step: value}} of the named run, through MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id],
                                filter_string=f"attributes.run_name = '{run_name}'")
    metrics = {k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)}
               for k in run.data.metrics}
    return {"status": run.info.status, "params": run.data.params, "metrics": metrics}
