"""Encode probe texts with plain pylate, in a process of its own, as a user would.

Run as a script (``python pylate_worker.py MODEL PROBES_JSON OUTPUT_NPZ``): it imports pylate, torch and
numpy only — never colbert_az_pylate — so what it measures is what plain pylate does with the folder.
The output holds, per text, the ids pylate fed the backbone and the vectors it returned, plus MaxSim
scores computed by pylate's own ``colbert_scores``.
"""

from __future__ import annotations

import json
import sys


def main(model_path: str, probes_path: str, output_path: str) -> None:
    import numpy as np
    import torch
    from pylate import models, scores

    with open(probes_path, encoding="utf-8") as handle:
        texts = json.loads(handle.read())
    model = models.ColBERT(model_path, device="cpu")
    arrays: dict[str, np.ndarray] = {}
    query_vectors = []
    for kind, is_query in (("q", True), ("d", False)):
        out = model.encode(texts, is_query=is_query, output_value=None, show_progress_bar=False, batch_size=16)
        for i in range(len(texts)):
            keep = torch.as_tensor(out["masks"][i]).bool()
            vectors = torch.as_tensor(out["token_embeddings"][i])[keep].float()
            arrays[f"{kind}_ids_{i}"] = torch.as_tensor(out["input_ids"][i])[keep].cpu().numpy()
            arrays[f"{kind}_vectors_{i}"] = vectors.cpu().numpy()
            if is_query:
                query_vectors.append(vectors)
    queries = torch.stack(query_vectors)
    arrays["scores"] = np.stack(
        [
            scores.colbert_scores(queries, torch.from_numpy(arrays[f"d_vectors_{i}"])[None])[:, 0].numpy()
            for i in range(len(texts))
        ],
        axis=1,
    )
    arrays["package_imported"] = np.array("colbert_az_pylate" in sys.modules)
    np.savez(output_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:4])
