# median WORDS: the median of whitespace-separated numbers (the mean of the
# two middle ones for an even count). Sourced by the A/B bench scripts.
median() { printf '%s\n' $1 | sort -g | awk '{ x[NR] = $1 } END { print (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2 }'; }
