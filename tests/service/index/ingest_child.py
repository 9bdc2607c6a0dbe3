"""Child process of the crash test: ingests batches forever, printing each acknowledged batch.

Usage: python -m tests.service.index.ingest_child DATA_DIR FIRST_BATCH [MILVUS_URI]. Vectors are a pure function of
the item id, so the parent can check every stored vector after killing this process with SIGKILL.
"""

from __future__ import annotations

import sys

from tests.service.index.synthetic import BATCH, SPACE_ID, deleted_in, open_store, records_for_batch


def main() -> None:
    data_dir, batch = sys.argv[1], int(sys.argv[2])
    milvus_uri = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    # snapshots happen mid-run, so a kill can land in one
    store = open_store(data_dir, snapshot_every=23, milvus_uri=milvus_uri)
    collection = store.get("crash")
    while True:
        collection.upsert(SPACE_ID, records_for_batch(batch))
        gone = deleted_in(batch)
        if gone:
            collection.delete(gone)
        print(f"ack {batch} {BATCH}", flush=True)
        batch += 1


if __name__ == "__main__":
    main()
