"""How long a reply may be in the evaluations, by what it is: one owner, so that every evaluation of the same kind of
reply generates alike."""

SENTENCE_TOKENS = 32  # a narration reply, or a benchmark's letter / number / yes-no answer: one short sentence
LABEL_TOKENS = 64  # a task label (COIN steps, Ego-Exo4D keysteps): a short phrase, some long
