"""A tiny, randomly initialised Stable Diffusion x4 upscaler folder with the real one's
structure: for tests, benchmarks and trying the machinery where no weights are at hand.

It is built in code from small configurations (a UNet taking 4 latent + 3 image channels
with a class-embedded noise level, a VAE shrinking by 4, a CLIP text encoder with a
handwritten tokenizer vocabulary, DDIM and DDPM schedulers as the real folder's) and
written with ``save_pretrained``, so it is loaded by path exactly as a user's folder is.
Its output means nothing as an image; what it checks is how tiles are sampled.

    python tools/tiny_sd_x4.py FOLDER     # then: tilewave upscale IN OUT --model FOLDER
"""

from __future__ import annotations

import argparse
import json
import os
import string
import tempfile
from typing import Any

#: Characters the handwritten vocabulary spells words with.
_ALPHABET = string.ascii_lowercase + string.digits + ",.-'"
#: How much louder the random UNet's output layer is made (see build_tiny_upscaler).
_UNET_GAIN = 3.0
#: Tokens per prompt (the real tokenizer's 77 would only make the tiny one slower).
_TOKENS = 16


def _tokenizer(folder: str) -> Any:
    """A CLIP tokenizer whose vocabulary is the characters of :data:`_ALPHABET`, alone and
    ending a word, with no merges: every word is spelt out."""
    from tilewave.models.sd_x4.folder import import_libraries

    CLIPTokenizer = import_libraries()[1].CLIPTokenizer
    vocab: dict[str, int] = {}
    for ch in _ALPHABET:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        with open(os.path.join(scratch, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
        tok = CLIPTokenizer(os.path.join(scratch, "vocab.json"), os.path.join(scratch, "merges.txt"))
    tok.model_max_length = _TOKENS
    return tok


def build_tiny_upscaler(folder: str, *, seed: int = 0, text_encoder: bool = True,
                        scheduler: str = "DDIMScheduler", max_noise_level: int = 350) -> str:
    """Write a tiny random ``StableDiffusionUpscalePipeline`` into ``folder``; returns it.

    ``text_encoder=False`` leaves the text encoder and tokenizer out (a folder without
    them); ``scheduler`` is the main scheduler's class (``DDIMScheduler`` as the real
    folder's, or ``DDPMScheduler``).
    """
    import torch

    from tilewave.models.sd_x4.folder import import_libraries

    diffusers, transformers = import_libraries()
    CLIPTextConfig, CLIPTextModel = transformers.CLIPTextConfig, transformers.CLIPTextModel

    torch.manual_seed(seed)
    width = 32
    unet = diffusers.UNet2DConditionModel(
        sample_size=32, in_channels=7, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=width, attention_head_dim=8, num_class_embeds=max_noise_level + 1)
    with torch.no_grad():
        # Random weights predict little, and the starting noise, which neighbouring tiles
        # share, would decide the result; a trained network's prediction decides it, so
        # the output layer is made louder to make the tiles' contexts matter as they do.
        unet.conv_out.weight.mul_(_UNET_GAIN)
        unet.conv_out.bias.mul_(_UNET_GAIN)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.08333,
        # Trained VAEs decode locally although their middle block attends to the whole
        # tile; random attention weights would not, and would make every decoded pixel
        # depend on the whole tile. Without it the decoder's reach is its convolutions'.
        mid_block_add_attention=False)
    common = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
              "beta_schedule": "scaled_linear"}
    extra = {"set_alpha_to_one": False, "steps_offset": 1} if scheduler == "DDIMScheduler" else {}
    main = getattr(diffusers, scheduler)(prediction_type="v_prediction", clip_sample=False,
                                         **common, **extra)
    low_res = diffusers.DDPMScheduler(**common)
    encoder = tok = None
    if text_encoder:
        tok = _tokenizer(folder)
        encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tok), hidden_size=width, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=_TOKENS, bos_token_id=len(tok) - 2,
            eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1))
    pipe = diffusers.StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=encoder, tokenizer=tok, unet=unet, low_res_scheduler=low_res,
        scheduler=main, max_noise_level=max_noise_level)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="where to write the upscaler (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-text-encoder", action="store_true",
                    help="leave the text encoder and tokenizer out")
    ap.add_argument("--scheduler", default="DDIMScheduler", choices=["DDIMScheduler", "DDPMScheduler"])
    args = ap.parse_args()
    print(build_tiny_upscaler(args.folder, seed=args.seed, text_encoder=not args.no_text_encoder,
                              scheduler=args.scheduler))


if __name__ == "__main__":
    main()
