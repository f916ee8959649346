#!/usr/bin/env bash
# Replays real clicks from the TalkingData sample into a running cluster
# (`make run`) with grpcurl and curl — shuffled, partly resent, with invalid
# events mixed in — then waits for the minutes to close and compares every
# ad's count and the top 10 with ground truth computed here with awk.
#
#   scripts/replay-sample.sh [ROWS]        (default 5000 rows)
#
# Needs grpcurl (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3), curl, awk, shuf.
set -euo pipefail
ROWS=${1:-5000}
GRPC=${ADCLICK_GRPC:-127.0.0.1:7070}
HTTP=${ADCLICK_HTTP:-127.0.0.1:8080}
LATENESS=${ADCLICK_ALLOWED_LATENESS_SECONDS:-15}
DATA=${DATA:-"$(dirname "$0")/../../shared/data/talkingdata_train_sample.csv"}
[ -f "$DATA" ] || { echo "sample not found at $DATA (set DATA=...)"; exit 1; }
command -v grpcurl >/dev/null || { echo "grpcurl not found: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The clicks land in the three minutes ending with the current one, keeping
# their second of the minute. A run prefix keeps click ids and ad ids fresh
# across runs: two runs within three minutes share minutes, and with the
# same ad ids each would count the other's clicks (false mismatches).
now=$(date -u +%s)
cur=$(( now / 60 * 60 ))
first=$(( cur - 120 ))
run=$(printf 'r%x' "$(date +%s%N)")
p0=$(date -u -d "@$first" +%Y-%m-%dT%H:%M:)
p1=$(date -u -d "@$(( first + 60 ))" +%Y-%m-%dT%H:%M:)
p2=$(date -u -d "@$(( first + 120 ))" +%Y-%m-%dT%H:%M:)
sed -n "2,$(( ROWS + 1 ))p" "$DATA" | awk -F, -v nowsec=$(( now - cur )) -v p0="$p0" -v p1="$p1" -v p2="$p2" -v run="$run" '{
  split($6, dt, /[-: ]/); m = (dt[4] * 60 + dt[5]) % 3; s = dt[6] + 0
  if (m == 2 && s > nowsec) s = nowsec   # never in the future
  ip = sprintf("%d.%d.%d.%d", int($1 / 16777216) % 256, int($1 / 65536) % 256, int($1 / 256) % 256, $1 % 256)
  printf "%d\t%s-app-%s\t%s%02d\t%s\t%s-%s-%s\n", NR, run, $2, (m == 0 ? p0 : (m == 1 ? p1 : p2)), s, ip, $3, $4, $1
}' > "$work/clicks.tsv"

# Ground truth: clicks per ad over the three minutes.
awk -F'\t' '{ n[$2]++ } END { for (a in n) print a "\t" n[a] }' "$work/clicks.tsv" | sort > "$work/truth.tsv"

# Shuffle, then resend 10% of the clicks and mix in invalid ones.
{ cat "$work/clicks.tsv"; shuf -n $(( ROWS / 10 )) "$work/clicks.tsv"; } | shuf > "$work/send.tsv"
tojson() {
  awk -F'\t' -v run="$run" 'BEGIN { printf "{\"events\":[" }
    NR > 1 { printf "," }
    NR % 97 == 0 { printf "{\"click_id\":\"\",\"ad_id\":\"bad\",\"click_time\":\"1970-01-01T00:00:00Z\"}," }
    { printf "{\"click_id\":\"%s-%s\",\"ad_id\":\"%s\",\"click_time\":\"%sZ\",\"ip\":\"%s\",\"user_id\":\"%s\",\"country\":\"us\"}", run, $1, $2, $3, $4, $5 }
    END { print "]}" }'
}
split -l 500 "$work/send.tsv" "$work/batch."
accepted=0 dups=0 rejected=0 i=0
for b in "$work"/batch.*; do
  tojson < "$b" > "$b.json"
  if (( i++ % 2 )); then
    out=$(grpcurl -plaintext -d @ "$GRPC" adclick.v1.IngestService/Ingest < "$b.json")
  else
    out=$(curl -sf "http://$HTTP/v1/clicks" -H 'Content-Type: application/json' --data-binary @"$b.json")
  fi
  a=$(grep -o '"accepted": *"[0-9]*"' <<<"$out" | grep -o '[0-9]*' || true)
  d=$(grep -o '"duplicates": *"[0-9]*"' <<<"$out" | grep -o '[0-9]*' || true)
  r=$(grep -o '"index"' <<<"$out" | wc -l)
  accepted=$(( accepted + ${a:-0} )) dups=$(( dups + ${d:-0} )) rejected=$(( rejected + r ))
done
echo "sent $(wc -l < "$work/send.tsv") clicks: accepted $accepted, duplicates $dups, rejected $rejected (expected $ROWS accepted)"

from=$(date -u -d "@$first" +%Y-%m-%dT%H:%M:%SZ)
to=$(date -u -d "@$(( cur + 60 ))" +%Y-%m-%dT%H:%M:%SZ)
wait_until=$(( cur + 60 + LATENESS + 2 ))
echo "waiting until the current minute closes ($(( wait_until - $(date +%s) )) s) ..."
while [ "$(date +%s)" -lt "$wait_until" ]; do sleep 1; done

# A minute is complete once every aggregator's partials of it are applied,
# shortly after it closes: ask again until complete, up to a deadline.
deadline=$(( wait_until + 60 ))
mismatch=0 incomplete=0
while IFS=$'\t' read -r ad want; do
  while :; do
    out=$(curl -sf "http://$HTTP/v1/ads/$ad/aggregated_count?from=$from&to=$to")
    grep -q '"complete":true' <<<"$out" && break
    [ "$(date +%s)" -lt "$deadline" ] || { incomplete=$(( incomplete + 1 )); break; }
    sleep 1
  done
  got=$(grep -o '"count":"[0-9]*"' <<<"$out" | grep -o '[0-9]*')
  if [ "$got" != "$want" ]; then echo "MISMATCH $ad: got $got, want $want"; mismatch=$(( mismatch + 1 )); fi
done < "$work/truth.tsv"
echo "checked $(wc -l < "$work/truth.tsv") ads over $from .. $to: $mismatch mismatches, $incomplete incomplete"

want_top=$(LC_ALL=C sort -t$'\t' -k2,2nr -k1,1 "$work/truth.tsv" | head -10 | awk -F'\t' '{ printf "%s=%s ", $1, $2 }')
# Other runs may have clicks in the same minutes: ask for a long top list and
# keep this run's first 10 (ties are by ad id, which share the run prefix).
top=$(grpcurl -plaintext -d '{"count":10000,"window":3,"to":"'"$to"'"}' "$GRPC" adclick.v1.QueryService/PopularAds)
got_top=$(tr -d ' \n' <<<"$top" | { grep -o '"adId":"[^"]*","count":"[0-9]*"' || true; } |
  sed 's/"adId":"\([^"]*\)","count":"\([0-9]*\)"/\1=\2/' | awk -v p="$run-" 'index($0, p) == 1 && n < 10 { printf "%s ", $0; n++ }')
echo "top 10 (grpcurl): $got_top"
[ "$got_top" = "$want_top" ] || { echo "MISMATCH top 10: want $want_top"; mismatch=$(( mismatch + 1 )); }
[ "$mismatch" -eq 0 ] && [ "$incomplete" -eq 0 ] && [ "$accepted" -eq "$ROWS" ] && echo "OK: every answer equals ground truth" || { echo "FAILED"; exit 1; }
