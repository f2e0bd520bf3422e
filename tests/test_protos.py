"""The committed generated code in protos/ is exactly what the .proto files generate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from google.protobuf import timestamp_pb2

from protos import sync_pb2

REPO = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path: Path) -> None:
    (tmp_path / "protos").mkdir()
    for proto in (REPO / "protos").glob("*.proto"):
        shutil.copy(proto, tmp_path / "protos" / proto.name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
        ]
        + [f"protos/{p.name}" for p in (REPO / "protos").glob("*.proto")],
        cwd=tmp_path,
        check=True,
    )
    generated = sorted(p.name for p in (tmp_path / "protos").glob("*_pb2*.py*"))
    committed = sorted(p.name for p in (REPO / "protos").glob("*_pb2*.py*"))
    assert generated == committed, "run scripts/gen-protos and commit the result"
    for name in generated:
        assert (tmp_path / "protos" / name).read_text() == (REPO / "protos" / name).read_text(), (
            f"protos/{name} is stale: run scripts/gen-protos and commit the result"
        )


def test_records_carry_lineage_and_round_trip() -> None:
    record = sync_pb2.Record(seq=7, created_at=timestamp_pb2.Timestamp(seconds=1_764_000_000))
    record.event.kind = "part_rejected"
    record.event.lineage.model_sha256 = "ab" * 32
    record.event.lineage.workflow_version = 3
    record.event.lineage.threshold_version = 2
    record.event.lineage.rollout_id = "r-1"
    record.event.lineage.cohort = "canary"
    batch = sync_pb2.RecordBatch(device_id="cam-1", records=[record])
    again = sync_pb2.RecordBatch.FromString(batch.SerializeToString())
    assert again == batch
    assert again.records[0].WhichOneof("body") == "event"
    telemetry = sync_pb2.TelemetryRecord()
    assert "lineage" in {f.name for f in telemetry.workflows.add().DESCRIPTOR.fields}
