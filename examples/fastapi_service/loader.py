"""Put the restaurants' features into the online store (Redis or SQLite).

    python -m examples.fastapi_service.loader --store redis --redis-url redis://127.0.0.1:6379/0
    python -m examples.fastapi_service.loader --store sqlite --sqlite-path /tmp/features.sqlite

The ``null_feature`` fault (faults.py: ``FASTSVC_FAULT_NULL_FEATURE`` or the fault file) is
applied here, because that is where it happens in production: an upstream job writes the
column as null for a share of the entities and the service only sees the result. The
share is chosen by a generator seeded with the feature name, so it is the same restaurants
at every load.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from examples.fastapi_service import faults as faults_mod
from examples.fastapi_service.artifacts import ArtifactError, read_manifest
from examples.fastapi_service.features import REDIS_KEY_PREFIX as KEY_PREFIX
from examples.fastapi_service.features import REDIS_META_KEY as META_KEY
from examples.fastapi_service.features import SQLITE_TABLE as TABLE
from examples.fastapi_service.settings import DEFAULT_ARTIFACTS

CHUNK = 2000

Row = list[float | None]


@dataclass(frozen=True)
class LoadReport:
    entities: int
    nulled: int  # entities whose null_feature the fault set to null
    seconds: float


def read_entities(artifacts: Path) -> tuple[list[str], list[int], list[Row]]:
    """(feature names, ids, rows) from the artifacts' CSV; an empty cell is null."""
    manifest = read_manifest(artifacts)
    path = artifacts / manifest["entity"]["file"]
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if header[1:] != manifest["store_features"]:
            raise ArtifactError(f"{path}: columns {header[1:]} differ from the manifest's "
                                f"{manifest['store_features']}")
        ids, rows = [], []
        for record in reader:
            ids.append(int(record[0]))
            rows.append([float(v) if v else None for v in record[1:]])
    return header[1:], ids, rows


def apply_null_fault(features: list[str], rows: list[Row], config: faults_mod.FaultConfig
                     ) -> int:
    """Null ``config.null_feature`` in ``null_fraction`` of the rows, in place."""
    if config.null_feature is None:
        return 0
    column = features.index(config.null_feature)
    rng = random.Random(config.null_feature)
    nulled = 0
    for row in rows:
        if rng.random() < config.null_fraction:
            row[column] = None
            nulled += 1
    return nulled


def load_redis(url: str, artifacts: Path, config: faults_mod.FaultConfig) -> LoadReport:
    t0 = time.perf_counter()
    features, ids, rows = read_entities(artifacts)
    nulled = apply_null_fault(features, rows, config)
    client = redis.Redis.from_url(url)
    try:
        for start in range(0, len(ids), CHUNK):
            chunk = list(zip(ids[start:start + CHUNK], rows[start:start + CHUNK], strict=True))
            pipe = client.pipeline(transaction=False)
            # Old hashes go first: a field nulled now must not survive from an earlier load.
            pipe.unlink(*(f"{KEY_PREFIX}{entity}" for entity, _ in chunk))
            for entity, row in chunk:
                pipe.hset(f"{KEY_PREFIX}{entity}", mapping={
                    f: repr(v) for f, v in zip(features, row, strict=True) if v is not None})
            pipe.execute()
        client.hset(META_KEY, mapping={"entities": len(ids),
                                       "null_feature": config.null_feature or ""})
    finally:
        client.close()
    return LoadReport(len(ids), nulled, time.perf_counter() - t0)


def load_sqlite(path: Path, artifacts: Path, config: faults_mod.FaultConfig) -> LoadReport:
    t0 = time.perf_counter()
    features, ids, rows = read_entities(artifacts)
    nulled = apply_null_fault(features, rows, config)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        columns = ", ".join(f"{f} REAL" for f in features)
        conn.execute(f"CREATE TABLE {TABLE} (restaurant_id INTEGER PRIMARY KEY, {columns})")
        marks = ", ".join("?" * (len(features) + 1))
        conn.executemany(f"INSERT INTO {TABLE} VALUES ({marks})",
                         ([entity, *row] for entity, row in zip(ids, rows, strict=True)))
        conn.commit()
    finally:
        conn.close()
    # Readers never see a half-written table: the file appears complete or not at all.
    tmp.replace(path)
    return LoadReport(len(ids), nulled, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load restaurant features into the store.")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sqlite-path", type=Path)
    parser.add_argument("--faults", type=Path,
                        help=f"fault file (else ${faults_mod.FILE_ENV} and the environment)")
    args = parser.parse_args(argv)
    try:
        env = dict(os.environ)
        if args.faults:
            env[faults_mod.FILE_ENV] = str(args.faults)
        config = faults_mod.from_env(env)
        if args.store == "redis":
            report = load_redis(args.redis_url, args.artifacts, config)
            where = args.redis_url
        else:
            if args.sqlite_path is None:
                parser.error("--store sqlite needs --sqlite-path")
            report = load_sqlite(args.sqlite_path, args.artifacts, config)
            where = str(args.sqlite_path)
    except (faults_mod.FaultConfigError, ArtifactError, redis.RedisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"loaded {report.entities} restaurants into {where} in {report.seconds:.1f} s"
          + (f" ({report.nulled} with {config.null_feature} nulled)" if report.nulled else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
