"""A real Cloud Storage emulator for the tests: gcp-storage-emulator (from PyPI), started as a
process on a free port of 127.0.0.1 and reached through google-cloud-storage's own switch,
STORAGE_EMULATOR_HOST. It answers the JSON API the client speaks: a missing bucket is a 404,
as on Google."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StorageEmulator:
    def __init__(self, log: Path, buckets: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self._log = log
        self._buckets = buckets
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                 "--port", str(self.port), "--in-memory", "-q"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"storage emulator did not start: {self._log}") from None
                time.sleep(0.05)
        for bucket in self._buckets:
            self.client().create_bucket(bucket)
        return self

    def client(self):  # type: ignore[no-untyped-def]
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.host
        try:
            return storage.Client(project="test", credentials=AnonymousCredentials())
        finally:
            if previous is None:
                del os.environ["STORAGE_EMULATOR_HOST"]
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return [b.name for b in self.client().list_blobs(bucket, prefix=prefix)]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
