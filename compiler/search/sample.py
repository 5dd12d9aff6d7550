"""`sample n`: n independent samples per prompt; the greedy loop with sampling selection."""
from decode.compiler.search.greedy import Greedy

STRATEGY = Greedy
