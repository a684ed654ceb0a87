"""Pretrained checkpoints through the shared weight cache, against a real HTTP server on 127.0.0.1.

The server (http.server in a thread) serves checkpoints the tests write with torch.save, under names
carrying their true sha256 prefix, and counts the requests; nothing is downloaded from elsewhere.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, demo_sweep_with

from prove_jobs.cli import main
from prove_jobs.errors import SpecError
from prove_jobs.jobdir import job_folder
from prove_jobs.metadata import read_meta
from prove_jobs.payload import TrainingJob
from prove_jobs.preflight import fetch_weights
from prove_jobs.render import render_run
from prove_jobs.runs import Run
from prove_jobs.spec import Sweep, load_sweep
from prove_jobs.terminal import byte_size
from prove_jobs.weights import WeightsError, hash_prefix, resolve

FCN = "demo_fcn_r18_tiny"
SEGFORMER = "demo_segformer_tiny"


@dataclass
class Server:
    """What the test server serves (name -> bytes), what it was asked for, and which files it cuts short."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    cut_short: set[str] = field(default_factory=set)  # sent with a Content-Length larger than what follows
    stop: object = None

    def url(self, name: str) -> str:
        return f"{self.base}/pretrain/{name}"


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            served.requests.append(name)
            data = served.files.get(name)
            if data is None:
                self.send_error(404)
                return
            short = name in served.cut_short
            self.send_response(200)
            self.send_header("Content-Length", str(len(data) + (4096 if short else 0)))
            self.end_headers()
            if short:  # the server dies mid-file: half of it, then the connection closes
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    served.stop = stop
    try:
        yield served
    finally:
        if thread.is_alive():
            stop()


def checkpoint_bytes(fill: float = 0.5) -> bytes:
    """A tiny backbone's state dict, as torch.save writes it."""
    torch = pytest.importorskip("torch", reason="checkpoints are written with torch.save (the train extra)")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        module[0].weight.fill_(fill)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def named(data: bytes, stem: str = "tiny_backbone_20260101") -> str:
    """``<stem>-<first 8 hex of its sha256>.pth``: the model zoo's naming, which torch.hub checks."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def point_at(templates: Path, model: str, source: str) -> Path:
    """Make ``model``'s template (in a copy) start from ``source``, wired into its model dict."""
    path = templates / "models" / f"{model}.py"
    text = re.sub(r"^pretrained = .*$", f"pretrained = {source!r}", path.read_text(), count=1, flags=re.M)
    path.write_text(text.replace("    pretrained=None,", "    pretrained=pretrained,"))
    return path


def shared_sweep(folder: Path, templates: Path, cache: Path | None = None, **extra: str) -> Path:
    lines = "".join(f"\n{key} = {value}" for key, value in extra.items())
    if cache is not None:
        lines += f"\nweights_cache = {str(cache)!r}"
    return demo_sweep_with(folder, templates, **{'name = "demo"': f'name = "demo"{lines}'})


def no_start_sweep(folder: Path, templates: Path) -> Path:
    """The demo sweep (its default cache) whose jobs cannot start: their interpreter, /bin/true, exits at once.
    A ``submit`` of it fetches, claims and queues for real; the test reads what it handed each job."""
    return demo_sweep_with(folder, templates, name="no-start.toml",
                           **{"[resources]": '[resources]\npython = "/bin/true"'})


def submitted_job(sweep: Sweep, run: Run) -> TrainingJob:
    """The job ``submit`` queued for ``run``, as the job itself loads it: submitit's pickle in its job folder."""
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.job_id is not None
    [pickled] = job_folder(sweep.data_root).with_name(meta.job_id).glob("*_submitted.pkl")
    job = pickle.loads(pickled.read_bytes()).function
    assert isinstance(job, TrainingJob) and job.token == meta.token  # this submission's job, not an older one
    return job


def cache_listing(cache: Path) -> list[str]:
    return sorted(os.listdir(cache)) if cache.exists() else []


def one_line(err: str, *needles: str) -> None:
    """One line of error (a download's progress lines before it aside)."""
    assert len([x for x in err.strip().splitlines() if not x.startswith("fetching ")]) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# --- sources and rendering --------------------------------------------------------------------------------


def test_sources_resolve_through_mmengines_table_and_unknown_schemes_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("mmengine", reason="open-mmlab:// names are read from mmengine's table")
    template = tmp_path / "m.py"
    ckpt = resolve(template, "open-mmlab://resnet50_v1c", tmp_path / "cache")
    assert ckpt.url == "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"
    assert ckpt.path == tmp_path / "cache" / "resnet50_v1c-2cccc1ad.pth" and ckpt.hash_prefix == "2cccc1ad"
    # a renamed name goes through mmengine's deprecated.json, as mmengine's loader does
    assert resolve(template, "open-mmlab://resnet50_caffe", tmp_path).url == resolve(
        template, "open-mmlab://detectron/resnet50_caffe", tmp_path).url
    assert hash_prefix("mit_b3_20220624-13b1141c.pth") == "13b1141c"
    local = resolve(template, str(tmp_path / "w-0123abcd.pth"), tmp_path / "cache")
    assert local.url is None and local.path == tmp_path / "w-0123abcd.pth"
    for source in ("s3://bucket/w.pth", "torchvision://resnet50", "weights/w.pth"):
        with pytest.raises(SpecError, match=r"m\.py: pretrained: "):
            resolve(template, source, tmp_path)
    with pytest.raises(SpecError, match="not in mmengine's table"):
        resolve(template, "open-mmlab://no_such_model", tmp_path)


def test_without_mmengine_an_open_mmlab_name_says_what_to_install(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mmengine", None)  # how Python spells "not installed here" to an import
    with pytest.raises(WeightsError, match=r"pip install mmengine.*or write the checkpoint's URL"):
        resolve(tmp_path / "m.py", "open-mmlab://resnet50_v1c", tmp_path)


def test_a_template_line_that_is_not_a_literal_is_refused(tmp_path: Path, templates_copy: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = point_at(templates_copy, FCN, "x")
    path.write_text(path.read_text().replace("pretrained = 'x'", "pretrained = __import__('os').getcwd()"))
    assert main(["plan", str(shared_sweep(tmp_path, templates_copy)), "--json"]) == 2
    one_line(capsys.readouterr().err, str(path), "pretrained: must be one literal")
    path.write_text(re.sub(r"^pretrained = .*$", "pretrained = None; prove_family = 'cnn'", path.read_text(),
                           flags=re.M))
    assert main(["plan", str(shared_sweep(tmp_path, templates_copy)), "--json"]) == 2
    one_line(capsys.readouterr().err, str(path), "give it a line of its own")


def test_rendered_model_names_the_cache_and_the_hash_does_not(tmp_path: Path, templates_copy: Path) -> None:
    url = "https://download.example.org/pretrain/mit_b0_20220624-d588d980.pth"
    template = point_at(templates_copy, FCN, url)
    sweep = load_sweep(shared_sweep(tmp_path, templates_copy, tmp_path / "alice cache"))
    run = sweep.runs([FCN], ["DEMO_REF"])[0]
    mine = render_run(sweep, run)
    cached = tmp_path / "alice cache" / "mit_b0_20220624-d588d980.pth"
    assert f"pretrained = {str(cached)!r}  # {url} (prove-jobs weight cache)\n" in mine.model_text
    assert mine.checkpoint is not None and mine.checkpoint.path == cached and not mine.from_scratch
    # the rest of the template is as written
    assert [x for x in mine.model_text.splitlines() if not x.startswith("pretrained =")] == [
        x for x in template.read_text().splitlines() if not x.startswith("pretrained =")]
    theirs = render_run(replace(sweep, weights_cache=tmp_path / "bob"), run)
    assert theirs.config_hash == mine.config_hash  # two users' caches: one config
    scratch = render_run(replace(sweep, pretrained=False), run)
    assert scratch.checkpoint is None and scratch.from_scratch
    assert "pretrained = None  # from scratch (the sweep says pretrained = false; " in scratch.model_text
    assert scratch.config_hash != mine.config_hash
    # the template saying None is from scratch too
    plain = render_run(sweep, sweep.runs([SEGFORMER])[0])
    assert plain.from_scratch and "pretrained = None  # from scratch (the template says so)" in plain.model_text


def test_the_sweep_keys_are_checked(tmp_path: Path, templates_copy: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["plan", str(shared_sweep(tmp_path, templates_copy, pretrained='"no"')), "--json"]) == 2
    one_line(capsys.readouterr().err, "pretrained: must be true or false")
    monkeypatch.setenv("PROVE_W", str(tmp_path / "w"))
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(shared_sweep(tmp_path, templates_copy, weights_cache='"${PROVE_W}/c"', pretrained="false"))
    assert sweep.weights_cache == tmp_path / "w" / "c" and sweep.pretrained is False
    sweep = load_sweep(shared_sweep(tmp_path, templates_copy, weights_cache='"rel/c"'))
    assert sweep.weights_cache == tmp_path / "rel" / "c"
    assert load_sweep(shared_sweep(tmp_path, templates_copy)).weights_cache == (
        load_sweep(shared_sweep(tmp_path, templates_copy)).data_root / ".prove-jobs" / "weights")


# --- fetching -------------------------------------------------------------------------------------------------


def test_a_sweep_of_several_runs_fetches_each_checkpoint_once(tmp_path: Path, templates_copy: Path, server: Server,
                                                              demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = checkpoint_bytes()
    name = named(data)
    server.files[name] = data
    for model in (FCN, SEGFORMER):  # four runs (2 models x 2 variants), one checkpoint
        point_at(templates_copy, model, server.url(name))
    sweep_file = shared_sweep(tmp_path, templates_copy)
    cache = demo / "runs" / ".prove-jobs" / "weights"

    assert main(["submit", str(sweep_file), "--dry-run", "--executor", "local"]) == 0
    err = capsys.readouterr().err
    assert f"{server.url(name)} -> {cache / name} (would fetch; {SEGFORMER}, {FCN})" in err
    assert server.requests == [] and not cache.exists()  # a dry run fetches nothing

    assert main(["weights", str(sweep_file)]) == 0
    out, err = capsys.readouterr()
    assert server.requests == [name]
    assert f"{server.url(name)} -> {cache / name} ({byte_size(len(data))}, fetched; {SEGFORMER}, {FCN})" in out
    assert f"fetching {name}: {byte_size(len(data))} of {byte_size(len(data))}" in err  # the progress, piped
    assert (cache / name).read_bytes() == data and cache_listing(cache) == [name]  # no temp file left
    st = os.lstat(cache / name)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o3775  # sweep umask 0002: group-shared, sticky

    # verified and reused: again, by `weights` and by a submission's check
    assert main(["weights", str(sweep_file)]) == 0
    assert f"({byte_size(len(data))}, verified; " in capsys.readouterr().out
    assert main(["submit", str(no_start_sweep(tmp_path, templates_copy)), "--executor", "local"]) == 0
    # submit names a checkpoint only when it fetches it or cannot: verified in the cache, it says nothing of it
    assert server.url(name) not in capsys.readouterr().err
    assert server.requests == [name]
    # each job checks the file against the whole sha256 submit hashed it to, before it loads it
    sweep = load_sweep(sweep_file)
    for run in sweep.runs():  # both models start from the one checkpoint
        assert submitted_job(sweep, run).weights == ((str(cache / name), hashlib.sha256(data).hexdigest()),)


def test_a_file_whose_name_does_not_match_its_hash_is_refused_and_leaves_nothing(
        tmp_path: Path, templates_copy: Path, server: Server, demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = checkpoint_bytes()
    wrong = "tiny_backbone_20260101-deadbeef.pth"
    assert not hashlib.sha256(data).hexdigest().startswith("deadbeef")
    server.files[wrong] = data
    point_at(templates_copy, FCN, server.url(wrong))
    sweep_file = shared_sweep(tmp_path, templates_copy)
    assert main(["weights", str(sweep_file), "--model", FCN]) == 2
    one_line(capsys.readouterr().err, server.url(wrong), "its name says deadbeef: refused, nothing kept")
    assert cache_listing(demo / "runs" / ".prove-jobs" / "weights") == []
    # nor does submit write a run
    assert main(["submit", str(sweep_file), "--model", FCN, "--executor", "local"]) == 2
    one_line(capsys.readouterr().err, "refused, nothing kept")
    assert not list((demo / "runs").rglob("prove_run.json"))


def test_a_server_that_dies_mid_file_leaves_no_partial_file(tmp_path: Path, templates_copy: Path, server: Server,
                                                            demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = checkpoint_bytes()
    name = named(data)
    server.files[name] = data
    server.cut_short.add(name)
    point_at(templates_copy, FCN, server.url(name))
    sweep_file = shared_sweep(tmp_path, templates_copy)
    assert main(["weights", str(sweep_file), "--model", FCN]) == 2
    one_line(capsys.readouterr().err, server.url(name), f"of {len(data) + 4096:,} bytes", "nothing kept")
    assert cache_listing(demo / "runs" / ".prove-jobs" / "weights") == []
    # once the server sends it whole, it is fetched
    server.cut_short.clear()
    assert main(["weights", str(sweep_file), "--model", FCN]) == 0
    assert (demo / "runs" / ".prove-jobs" / "weights" / name).read_bytes() == data


def test_submit_that_cannot_fetch_refuses_naming_the_url_and_the_command(
        tmp_path: Path, templates_copy: Path, server: Server, demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = checkpoint_bytes()
    name = named(data)
    point_at(templates_copy, FCN, server.url(name))
    server.stop()  # type: ignore[operator]  # the login node reaches nothing
    sweep_file = shared_sweep(tmp_path, templates_copy)
    assert main(["submit", str(sweep_file), "--model", FCN, "--executor", "local"]) == 2
    one_line(capsys.readouterr().err, f"{server.url(name)}: cannot fetch",
             f"run `prove-jobs weights {sweep_file}` on a machine that reaches it",
             f"or put the file at {demo / 'runs' / '.prove-jobs' / 'weights' / name}")
    assert not list((demo / "runs").rglob("prove_run.json"))
    assert cache_listing(demo / "runs" / ".prove-jobs" / "weights") == []


def test_another_users_cache_is_read_not_fetched_again(tmp_path: Path, templates_copy: Path, server: Server,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """alice (root here) fetched the file; bob (another uid, in a forked process) finds it and fetches nothing."""
    if os.geteuid() != 0:
        pytest.skip("running as another Unix user (setuid) needs root")
    import pwd

    bob = pwd.getpwnam("nobody")
    data = checkpoint_bytes()
    name = named(data)
    server.files[name] = data
    point_at(templates_copy, FCN, server.url(name))
    shared = Path(tempfile.mkdtemp(prefix="prove-weights-", dir="/tmp"))  # a folder bob can reach
    try:
        shared.chmod(0o755)
        templates = Path(shutil.copytree(templates_copy, shared / "templates"))
        sweep = load_sweep(shared_sweep(shared, templates, shared / "cache"), data_root=shared)
        runs = sweep.runs([FCN])
        weights = ["weights", str(sweep.path), "--data-root", str(shared), "--model", FCN]
        assert f"({byte_size(len(data))}, fetched; {FCN})" in cli(*weights)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # bob
            try:
                os.setgid(bob.pw_gid)
                os.setuid(bob.pw_uid)
                states = [f"{f.state} {f.sha256}" for f in fetch_weights(sweep, runs)]
                os.write(write, " ".join(states).encode())
            except BaseException as exc:  # told to the parent, whatever it is
                os.write(write, f"error {exc}".encode())
            finally:
                os._exit(0)
        os.close(write)
        said = os.read(read, 4096).decode()
        os.waitpid(pid, 0)
        assert said == f"verified {hashlib.sha256(data).hexdigest()}"
        assert server.requests == [name]
        # a cache file owned by someone else that does not match its name is refused, naming its owner
        os.chown(shared / "cache" / name, bob.pw_uid, bob.pw_gid)
        (shared / "cache" / name).write_bytes(data + b"tampered")
        assert main(weights) == 2
        one_line(capsys.readouterr().err, f"its name says {name[-12:-4]} (owner nobody, modified ")
        assert server.requests == [name]  # never fetched again over it
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_link_planted_in_the_cache_is_refused(tmp_path: Path, templates_copy: Path, server: Server,
                                               demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = checkpoint_bytes()
    name = named(data)
    server.files[name] = data
    point_at(templates_copy, FCN, server.url(name))
    cache = demo / "runs" / ".prove-jobs" / "weights"
    cache.mkdir(parents=True)
    (tmp_path / "elsewhere.pth").write_bytes(data)
    (cache / name).symlink_to(tmp_path / "elsewhere.pth")
    assert main(["weights", str(shared_sweep(tmp_path, templates_copy)), "--model", FCN]) == 2
    one_line(capsys.readouterr().err, str(cache / name), "not a regular file")
    assert server.requests == []


# --- in the job --------------------------------------------------------------------------------------------------


def test_a_cache_file_changed_after_submit_fails_the_job_and_is_not_loaded(
        tmp_path: Path, templates_copy: Path, server: Server, demo: Path) -> None:
    data = checkpoint_bytes()
    name = named(data)
    server.files[name] = data
    point_at(templates_copy, FCN, server.url(name))
    sweep = load_sweep(no_start_sweep(tmp_path, templates_copy))
    run = sweep.runs([FCN], ["DEMO_REF"])[0]
    # submit fetches the checkpoint, claims the run and queues a job that cannot start: it is run here instead
    cli("submit", sweep.path, *run.options.split(), "--executor", "local")
    job = submitted_job(sweep, run)
    cached = sweep.weights_cache / name
    cached.write_bytes(data[:-8] + b"\0" * 8)  # changed in place, after submit, by whoever may write it
    with pytest.raises(WeightsError) as raised:
        job()
    message = str(raised.value)
    one_line(message, f"{cached}: changed since submit", "owner root, modified ", "not loaded")
    meta = read_meta(run.run_dir)
    assert meta is not None and meta.failed_at is not None and meta.error == message and meta.started_at is None


# --- a training through the CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_local_training_starts_from_the_served_checkpoint_and_again_offline(
        tmp_path: Path, templates_copy: Path, server: Server, demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """submit --executor local --wait: the FCN's backbone starts from the checkpoint (mmengine's load line
    names the cached file, and a parameter filled with 0.5 has that value after init); with the server
    stopped, a second run starts from the cache."""
    pytest.importorskip("mmseg", reason="training needs the train extra")
    import torch

    sweep_file = shared_sweep(tmp_path, templates_copy)
    data = backbone_checkpoint(load_sweep(sweep_file), tmp_path)
    name = named(data, "tiny_resnet18_v1c_20260101")
    server.files[name] = data
    point_at(templates_copy, FCN, server.url(name))
    assert "pretrained=pretrained" in (templates_copy / "models" / f"{FCN}.py").read_text()
    cached = demo / "runs" / ".prove-jobs" / "weights" / name

    assert main(["submit", str(sweep_file), "--model", FCN, "--variant", "DEMO_REF", "--executor", "local",
                 "--wait"]) == 0, capsys.readouterr().err
    assert server.requests == [name] and cached.read_bytes() == data
    sweep = load_sweep(sweep_file)
    first = sweep.runs([FCN], ["DEMO_REF"])[0].run_dir
    assert f"load model from: {cached}" in run_log(first)
    assert f"pretrained = {str(cached)!r}" in (first / "prove" / "model.py").read_text()

    server.stop()  # type: ignore[operator]
    assert main(["submit", str(sweep_file), "--model", FCN, "--variant", "DEMO_BS4", "--executor", "local",
                 "--wait"]) == 0, capsys.readouterr().err
    second = sweep.runs([FCN], ["DEMO_BS4"])[0].run_dir
    assert f"load model from: {cached}" in run_log(second)
    assert server.requests == [name]
    # the parameter the checkpoint filled with 0.5 was loaded (checked on the model as the run builds it)
    weights = torch.load(io.BytesIO(data), weights_only=True)
    assert torch.all(weights["stem.0.weight"] == 0.5)
    model = built_model(second)
    assert torch.equal(model.backbone.stem[0].weight.detach(), weights["stem.0.weight"])


def run_log(run_dir: Path) -> str:
    return "".join(p.read_text() for p in run_dir.glob("2*/2*.log"))


def backbone_checkpoint(sweep: Sweep, tmp_path: Path) -> bytes:
    """The demo FCN's backbone as mmseg builds it, its stem's first conv filled with 0.5, saved by torch."""
    import torch

    model = built_model(None, sweep=sweep, out=tmp_path / "flat")
    with torch.no_grad():
        model.backbone.stem[0].weight.fill_(0.5)
    buffer = io.BytesIO()
    torch.save(model.backbone.state_dict(), buffer)
    return buffer.getvalue()


def built_model(run_dir: Path | None, *, sweep: Sweep | None = None, out: Path | None = None) -> Any:
    """The model a run's config builds, its weights initialised as the training does (init_weights).

    ``Any``: an mmseg segmentor, whose submodules (``backbone``, ...) are the config's, unknown to a type checker.
    """
    from mmengine.config import Config

    from prove_jobs import mmcv_shim
    from prove_jobs.payload import needs_shim
    from prove_jobs.render import render_flat

    if needs_shim():
        mmcv_shim.install()
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    if run_dir is None:
        assert out is not None and sweep is not None
        config = render_flat(sweep, sweep.runs([FCN], ["DEMO_REF"]), out)[0]
    else:
        config = run_dir / "prove" / "config.py"
    cfg = Config.fromfile(str(config))
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_ctrl_c_mid_download_leaves_no_temp_file(tmp_path: Path, templates_copy: Path, server: Server,
                                                 demo: Path) -> None:
    data = checkpoint_bytes()
    name = named(data)
    server.files[name] = data
    point_at(templates_copy, FCN, server.url(name))
    sweep = load_sweep(shared_sweep(tmp_path, templates_copy))

    def interrupted(file: str, done: int, total: int | None) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_weights(sweep, sweep.runs([FCN]), progress=interrupted)
    assert cache_listing(sweep.weights_cache) == []
    # the next `weights` finds nothing of the interrupted download and fetches the whole file
    assert f"{server.url(name)} -> {sweep.weights_cache / name} ({byte_size(len(data))}, fetched; {FCN})" in cli(
        "weights", sweep.path, "--model", FCN)
