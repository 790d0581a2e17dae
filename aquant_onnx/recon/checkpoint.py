"""Resumable reconstruction: the quantizer state after every finished unit (DESIGN §2).

``<checkpoint_dir>/state.pt`` holds plain tensors and numbers only (loadable with
``torch.load(weights_only=True)``):

    {"version": 1, "fingerprint": sha256(model bytes + config JSON), "finished": k,
     "quantizers": {layer: {"weight": state_dict, "input": state_dict}}}

The config JSON leaves out ``recon.checkpoint_dir`` and ``recon.device`` (where the state is
kept and computed does not change what it means). It is written to a temporary file and
renamed, so an interrupted run always leaves the last complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from ..config import QuantConfig
from ..errors import ConfigError
from ..graph.external import update_digest
from ..torchgraph.executor import TorchGraph

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILE_NAME = "state.pt"


def fingerprint(model: onnx.ModelProto, config: QuantConfig) -> str:
    """sha256 of the model bytes and the config JSON without ``checkpoint_dir`` and ``device``."""
    data = config.to_dict()
    data["recon"].pop("checkpoint_dir", None)
    data["recon"].pop("device", None)
    digest = hashlib.sha256()
    update_digest(digest, model)  # the model bytes, also above protobuf's 2 GiB limit
    digest.update(json.dumps(data, sort_keys=True).encode())
    return digest.hexdigest()


def quantizer_state(graph: TorchGraph) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """State dicts (detached CPU tensors) of every layer's weight and input quantizer."""
    state: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for name, layer in graph.layers.items():
        entry = {}
        for role, quantizer in (("weight", layer.weight_quantizer), ("input", layer.input_quantizer)):
            if quantizer is not None:
                entry[role] = {k: v.detach().cpu().clone() for k, v in quantizer.state_dict().items()}
        state[name] = entry
    return state


def load_quantizer_state(graph: TorchGraph, state: dict[str, dict[str, dict[str, torch.Tensor]]]) -> None:
    for name, entry in state.items():
        layer = graph.layers[name]
        for role, quantizer in (("weight", layer.weight_quantizer), ("input", layer.input_quantizer)):
            if role in entry and quantizer is not None:
                quantizer.load_state_dict(entry[role])


@dataclass
class Checkpoint:
    directory: Path
    fingerprint: str

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME

    def load(self) -> dict | None:
        """The saved state, or None when there is none; ConfigError when it is another run's."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or foreign file: tell the user what to do
            raise ConfigError(
                f"checkpoint {self.path} cannot be read ({type(error).__name__}); delete it or use another "
                "--checkpoint-dir"
            ) from error
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"checkpoint in {self.directory} was made for another model/config; use another --checkpoint-dir "
                "or delete it"
            )
        return state

    def save(self, graph: TorchGraph, finished: int) -> None:
        """Atomically write the state after ``finished`` units (temp file + rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "finished": finished,
            "quantizers": quantizer_state(graph),
        }
        temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.path)
        logger.debug("checkpoint %s: %d units finished", self.path, finished)
