"""`wordreward K [r=0.5] [lenpen=1.0]`: beam search with a word reward, a user-defined beam
variant (Murray & Chiang 2018, "Correcting Length Bias in Neural Machine Translation").
Every token adds R to a hypothesis' score, against beam search's taste for short outputs:
L new tokens score (log P + R·L) / L ** lenpen. `rescore` is the whole variant; decode.Beam
keeps the pool, and traces and `decode viz` show it with no more code.

    $ decode run --stage recipes/plugins/wordreward.py "wordreward 4 r=0.8 | max 32" --prompt "ROMEO:"
"""
import decode


@decode.search(
    "wordreward",
    args=[decode.Arg("k", int, lo=1, doc="beam width"),
          decode.Arg("r", float, 0.5, lo=-1e20, hi=1e20, keyword=True, doc="reward per token"),
          decode.Arg("lenpen", float, 1.0, lo=-4.0, hi=4.0, keyword=True, doc="length penalty")],
    doc="beam search where every token adds R to the score (a word reward against short outputs)",
    cite="Murray & Chiang 2018, Correcting Length Bias in Neural Machine Translation (WMT 2018)")
class WordReward(decode.Beam):
    def hyper(self):
        return {**super().hyper(), "r": self.cfg.params["r"]}

    def rescore(self, acc, logp, hp):
        return acc + hp["r"], (-hp["r"]).expand_as(acc)  # (scores, the penalty taken off them)
