"""`edt T0 [theta=1.0] [n=0.8]`: entropy-based dynamic temperature, as a user-defined stage.

Zhang, Bao & Huang 2024, "EDT: Improving Large Language Models' Generation by Entropy-based
Dynamic Temperature Sampling", arXiv:2403.14541.

Each row is divided by its own temperature T = T0 * N ** (theta / H), H the entropy (nats)
of the row's distribution as it reaches this stage: where the model is sure (H small) it
samples almost greedily, where it is unsure (H large) it samples at about T0.

    $ decode run --stage recipes/plugins/edt.py recipes/plugins/edt.dec --prompt "ROMEO:"

This file is the whole stage: the decorator adds the clause to the language, and the
compiler runs the function inside the compiled step like a built-in kernel.
"""
import torch

import decode

MIN_T = 1e-3  # H = 0 gives T = 0: a point mass stays one, without dividing by zero


@decode.stage(
    "edt",
    args=[
        decode.Arg("t", float, lo=0.0, lo_open=True, doc="base temperature T0"),
        decode.Arg("theta", float, 1.0, lo=0.0, keyword=True,
                   doc="how strongly a low entropy cools the step (0: a fixed T0)"),
        decode.Arg("n", float, 0.8, lo=0.0, hi=1.0, lo_open=True, keyword=True,
                   doc="base of the exponent (the paper uses 0.8)"),
    ],
    doc="entropy-based dynamic temperature: divide each row by T * N ** (theta / entropy)",
    cite="Zhang, Bao & Huang 2024, EDT: Entropy-based Dynamic Temperature Sampling (arXiv:2403.14541)",
    sampling=True,
)
def edt(logits: torch.Tensor, ctx, t, theta, n) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    surprisal = -logp.clamp(min=torch.finfo(logp.dtype).min)  # removed tokens: 0 * inf is 0, not nan
    entropy = (logp.exp() * surprisal).sum(-1, keepdim=True)
    # a point mass has entropy 0: theta / tiny is huge (T -> MIN_T), and theta = 0 stays 0, not nan
    temp = t * torch.pow(n, theta / entropy.clamp(min=torch.finfo(entropy.dtype).tiny))
    return logits / temp.clamp(min=MIN_T)
