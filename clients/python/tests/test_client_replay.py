"""Event files and ``spikeserve-client replay``: N-MNIST ``.bin``, ``.npy`` and JSON recordings streamed
into a session, fast and paced, answering as one request with the same events."""

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spikeserve_client import Client, EventFileError, Partial, Result, read_events, replay
from spikeserve_client.cli import main
from spikeserve_client.events import write_nmnist
from spikeserve_process import REPO, Server

MODELS = REPO / "models"


def heldout(model: str) -> dict[str, Any]:
    return json.loads((MODELS / model / "heldout.json").read_text())


def sample(index: int) -> np.ndarray:
    return np.asarray(heldout("mnist-events")["events"][index], dtype=np.int64)


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    with Client(server.grpc_addr) as connected:
        yield connected


def run_cli(*arguments: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = main(list(arguments), out=out)
    return status, out.getvalue().splitlines()


def test_event_files_are_read(tmp_path: Path) -> None:
    rows = sample(0)
    write_nmnist(tmp_path / "a.bin", rows)
    from_bin = read_events(tmp_path / "a.bin")
    assert np.array_equal(from_bin[:, [0, 1, 3]], rows[:, [0, 1, 3]])
    assert np.array_equal(from_bin[:, 2], rows[:, 2] - rows[0, 2])  # N-MNIST: from the first event
    np.save(tmp_path / "a.npy", rows)
    assert np.array_equal(read_events(tmp_path / "a.npy"), rows)
    (tmp_path / "a.json").write_text(json.dumps({"events": rows.tolist()}))
    assert np.array_equal(read_events(tmp_path / "a.json"), rows)
    assert np.array_equal(read_events(MODELS / "mnist-events" / "heldout.json", sample=0), rows)
    with pytest.raises(EventFileError, match="choose one"):
        read_events(MODELS / "mnist-events" / "heldout.json")
    (tmp_path / "bad.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(EventFileError, match="5-byte"):
        read_events(tmp_path / "bad.bin")
    (tmp_path / "a.txt").write_text("1 2 3 0")
    with pytest.raises(EventFileError, match="unknown event file type"):
        read_events(tmp_path / "a.txt")
    with pytest.raises(EventFileError, match="no such file"):
        read_events(tmp_path / "missing.bin")


def test_replay_answers_as_one_request(client: Client) -> None:
    rows = sample(1)
    whole = client.infer("mnist-events", events=rows)
    seen: list[Partial | Result] = []
    final = replay(client, "mnist-events", rows, realtime=False, chunk_ms=7, on_item=seen.append)
    assert (final.timesteps, final.class_index) == (whole.timesteps, whole.class_index)
    assert final.probabilities == pytest.approx(whole.probabilities, abs=1e-6)
    assert [p.timestep for p in seen[:-1]] == list(range(1, final.timesteps + 1))  # type: ignore[union-attr]
    assert seen[-1] == final


def test_the_replay_command_on_each_format(server: Server, client: Client, tmp_path: Path) -> None:
    rows = sample(2)
    write_nmnist(tmp_path / "s.bin", rows)
    np.save(tmp_path / "s.npy", rows)
    for path in (tmp_path / "s.bin", tmp_path / "s.npy"):
        expected = client.infer("mnist-events", events=read_events(path))
        status, lines = run_cli("replay", str(path), "--model", "mnist-events", "--server", server.grpc_addr, "--fast")
        assert status == 0
        assert lines[-1].startswith(f"=> label {expected.label} (class {expected.class_index})")
        assert f"after {expected.timesteps}/10 timesteps" in lines[-1]
        assert len(lines) == expected.timesteps + 1
    # Paced in real time (four times faster), JSON lines, a policy flag.
    status, lines = run_cli(
        "replay",
        str(MODELS / "mnist-events" / "heldout.json"),
        "--sample",
        "2",
        "--model",
        "mnist-events",
        "--server",
        server.grpc_addr,
        "--speed",
        "4",
        "--threshold",
        "1.0",
        "--json",
    )
    assert status == 0
    records = [json.loads(line) for line in lines]
    assert [r["partial"]["timestep"] for r in records[:-1]] == list(range(1, 11))
    assert records[-1]["final"]["timesteps"] == 10 and records[-1]["final"]["exit_reason"] == "max_timesteps"


def test_the_replay_command_reports_errors(server: Server, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", sample(0))
    assert run_cli("replay", str(tmp_path / "s.npy"), "--model", "digits", "--server", server.grpc_addr)[0] == 2
    assert run_cli("replay", str(tmp_path / "s.npy"), "--model", "nope", "--server", server.grpc_addr)[0] == 1
    assert run_cli("replay", str(tmp_path / "none.bin"), "--model", "mnist-events")[0] == 2
    status, lines = run_cli("models", "--server", server.grpc_addr)
    assert status == 0 and any(line.startswith("mnist-events") for line in lines)
