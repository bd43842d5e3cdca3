# One line per CSV file (a city): lowest, highest and mean temperature.
# Input: date,celsius with a header line; run with -F,
FNR == 1 { next }
{
    city = FILENAME; sub(/.*\//, "", city); sub(/\.csv$/, "", city)
    if (!(city in n)) { lo[city] = $2; hi[city] = $2; order[++cities] = city }
    n[city]++; sum[city] += $2
    if ($2 < lo[city]) lo[city] = $2
    if ($2 > hi[city]) hi[city] = $2
}
END {
    for (i = 1; i <= cities; i++) {
        c = order[i]
        printf "%-8s min %5.1f  max %5.1f  mean %5.1f\n", c, lo[c], hi[c], sum[c] / n[c]
    }
}
