"""How tilewave is installed: next to a user's own torch, with this machine's pin kept in a
constraints file, and on a Ray cluster with the torch build each node needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_torch_is_a_range_for_users_and_a_pin_only_in_the_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert torch and all("==" not in d and ">=" in d for d in torch)
    for extra in project["optional-dependencies"].values():
        assert not any(re.match(r"torch\b.*==", d) for d in extra)
    assert re.search(r"^torch==\S+$", (ROOT / "constraints.txt").read_text(), re.M)
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "-c constraints.txt -e ." in readme and "-c constraints.txt -e '.[test" in readme
    assert "-c constraints.txt -e '.[test" in ci


def test_the_cluster_config_is_valid_and_installs_the_build_each_node_needs():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)  # Ray's own schema
    head = " ".join(config["head_setup_commands"])
    workers = " ".join(config["worker_setup_commands"])
    assert "download.pytorch.org/whl/cpu" in head
    assert "torch" in workers and "download.pytorch.org/whl/cpu" not in workers
    for commands in (head, workers):
        assert commands.index("torch") < commands.index("tilewave[")
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1


def test_the_cluster_nodes_get_the_python_tilewave_requires():
    """Every node runs in a Ray image whose tag names its Python (``-py311``), at least
    pyproject's ``requires-python``, and a Ray release tilewave accepts; the GPU workers'
    image is a CUDA one, the head's a CPU one."""
    from ray.autoscaler._private.util import prepare_config

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = tuple(int(p) for p in re.fullmatch(r">=\s*(\d+)\.(\d+)", project["requires-python"]).groups())
    ray_floor = next(tuple(int(p) for p in re.search(r">=\s*(\d+)\.(\d+)", d).groups())
                     for d in project["dependencies"] if re.match(r"ray\b", d))
    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    docker = config["docker"]
    images = {role: docker.get(f"{role}_image") or docker.get("image", "(no image: the host's Python)")
              for role in ("head", "worker")}
    for name, node_type in config["available_node_types"].items():
        if "worker_image" in node_type.get("docker", {}):
            images[f"worker {name}"] = node_type["docker"]["worker_image"]
    for role, image in images.items():
        tag = re.fullmatch(r"rayproject/ray:(\d+)\.(\d+)\.(\d+)-py3(\d+)-(cpu|gpu|cu\d+)", image)
        assert tag, f"{role}: {image} names no Ray release and Python version"
        assert (3, int(tag[4])) >= floor, f"{role}: {image} has Python 3.{tag[4]}"
        assert (int(tag[1]), int(tag[2])) >= ray_floor
        assert (tag[5] == "cpu") == (role == "head"), image
    # The setup runs in those containers: no command brings another Python.
    commands = config["setup_commands"] + config["head_setup_commands"] + config["worker_setup_commands"]
    assert not any(re.search(r"python3(\.\d+)?\b|--user", c) for c in commands)
