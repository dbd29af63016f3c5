"""Where a `charrnn tune` study lives: its Optuna RDB storage (SQLite in the study directory, or a
database several machines share) and the study directory's tune.json, which names it for --report."""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

from charrnn.checkpoint import atomic_write
from charrnn.errors import CharrnnError

INSTALL_HINT = "charrnn tune needs the tune extra: pip install -e '.[tune]'"
STUDY_FILE = "tune.json"
DB_FILE = "study.db"
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20  # a RUNNING trial without a heartbeat for this long is marked FAIL


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise CharrnnError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported here, in one line each
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(config) -> str:
    if not config.storage:
        return f"sqlite:///{(Path(config.out) / DB_FILE).resolve()}"
    return with_driver(config.storage)


def with_driver(url) -> str:
    """postgresql://... with the driver the tune extra installs (psycopg 3): SQLAlchemy 2.1 takes it by
    default, 2.0 would look for psycopg2."""
    scheme, separator, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if separator and scheme in ("postgresql", "postgres") else url


def masked_url(url) -> str:
    """The URL as the user wrote it (without the driver with_driver added), its password hidden."""
    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: hide what stands between user: and @ all the same
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_storage(optuna, url):
    """Optuna's RDB storage with heartbeats; any failure to reach or create it is one line."""
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    else:
        engine_kwargs = None
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
            )
        except Exception as error:
            # Two workers creating the tables of an empty database at once: one loses the race, once.
            racing = type(error).__name__ in ("IntegrityError", "ProgrammingError") and attempt < 2
            if racing:
                time.sleep(1.0 + attempt)
                continue
            detail = " ".join(str(error).split("\n")[0].split()) or type(error).__name__
            raise CharrnnError(
                f"cannot open the study storage {masked_url(url)}: {detail}; check the URL and that its database is up"
            ) from None
    raise AssertionError("unreachable")


def write_manifest(study_dir: Path, config, name):
    manifest = {"study": name, "storage": None, "corpus": str(Path(config.corpus).resolve())}
    if config.storage:
        manifest["storage"] = masked_url(config.storage)
        manifest["password_hidden"] = manifest["storage"] != config.storage
    atomic_write(study_dir / STUDY_FILE, lambda out: out.write(json.dumps(manifest, indent=2).encode() + b"\n"))


def read_manifest(study_dir: Path) -> dict:
    path = study_dir / STUDY_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CharrnnError(
            f"{study_dir} is not a study directory (it has no {STUDY_FILE}); name the --out of a tune"
        ) from None
    except (OSError, ValueError) as error:
        raise CharrnnError(f"cannot read {path}: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("study"), str):
        raise CharrnnError(f"{path} does not describe a study; name the --out of a tune")
    return manifest


def load_study_of(study_dir, storage=None):
    """(optuna, study, storage URL, manifest) of an existing study directory, for --report."""
    optuna = import_optuna()
    study_dir = Path(study_dir)
    manifest = read_manifest(study_dir)
    url = with_driver(storage or manifest.get("storage") or f"sqlite:///{(study_dir / DB_FILE).resolve()}")
    if not storage and manifest.get("password_hidden"):
        raise CharrnnError(f"the study lives in {manifest['storage']}; pass its URL with the password: --storage URL")
    if url.startswith("sqlite") and not storage and not (study_dir / DB_FILE).is_file():
        raise CharrnnError(f"{study_dir / DB_FILE} is missing; the study's trials are gone")
    backend = open_storage(optuna, url)
    try:
        study = optuna.load_study(study_name=manifest["study"], storage=backend)
    except KeyError:
        raise CharrnnError(f"{masked_url(url)} holds no study named {manifest['study']!r}") from None
    return optuna, study, url, manifest
