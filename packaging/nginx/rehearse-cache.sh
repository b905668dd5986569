#!/usr/bin/env bash
# Rehearses docs/DEPLOYMENT.md "More than one box": two planbox boxes (each
# fetching on its own: --demo, its own store) behind nginx running
# packaging/nginx/planbox-cache.conf, with loopback addresses in
# 18600-18699 (OPS_PORT_BASE moves them). Checks, printing ok / FAIL:
#
#   1. nginx answers /search with planbox's exact bytes (identity and gzip),
#      MISS then HIT;
#   2. 20 clients asking for a new query at once: one request reaches a box
#      (proxy_cache_lock);
#   3. past max-age nginx revalidates: the box answers 304, the client 200;
#   4. one box stopped: a query nginx never saw is still answered (the
#      other box);
#   5. both boxes stopped: cached answers keep coming (STALE, same bytes);
#      only a query never asked before fails (502).
#
# The boxes run with --cache-max-age 2s so that this takes seconds, not a
# fetch interval. Needs nginx (apt-get install nginx), curl, python3 and a
# planbox binary (PLANBOX_BIN, default target/release/planbox). Run as root
# or as any user (nginx then keeps its own user).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${PLANBOX_BIN:-$repo/target/release/planbox}
base=${OPS_PORT_BASE:-18600}
front=127.0.0.1:$((base + 20)) box1=127.0.0.1:$((base + 21)) box2=127.0.0.1:$((base + 22))
for tool in nginx curl python3; do
    command -v $tool >/dev/null || { echo "needs $tool (apt-get install nginx curl)" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "no planbox binary at $bin (cargo build --release, or PLANBOX_BIN)" >&2; exit 2; }

tmp=$(mktemp -d)
# nginx workers run as another user (nobody) when started by root: they
# must reach the cache and temp directories.
chmod 755 "$tmp"
mkdir -p "$tmp/cache" "$tmp/temp" "$tmp/logs"
[ "$(id -u)" = 0 ] && chown nobody "$tmp/cache" "$tmp/temp"
. "$repo/packaging/checks.sh"
box_pids=()
cleanup() {
    stop_started
    rm -rf "$tmp"
}
trap cleanup EXIT
# get URL [CURL ARGS...]: body to $tmp/body, prints "STATUS CACHE-STATUS".
get() {
    local url=$1
    shift
    curl -s -o "$tmp/body" -D "$tmp/head" "$@" "$url" || true
    printf '%s %s\n' "$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$tmp/head")" \
        "$(sed -n 's/^[Xx]-[Cc]ache-[Ss]tatus: *//p' "$tmp/head" | tr -d '\r')"
}
# Requests that reached the boxes' /search, by status, summed over the boxes.
searches() {
    local status=$1 n=0 v
    for b in $box1 $box2; do
        v=$(curl -fsS "http://$b/metrics" 2>/dev/null |
            sed -n "s/^planbox_http_requests_total{route=\"\/search\",status=\"$status\"} //p")
        n=$((n + ${v:-0}))
    done
    echo $n
}

step "two boxes ($box1, $box2) and nginx ($front)"
i=0
for b in $box1 $box2; do
    i=$((i + 1))
    PLANBOX_LOG=warn "$bin" serve --demo --db "$tmp/box$i.db" --listen "$b" --cache-max-age 2s \
        > "$tmp/logs/box$i.log" 2>&1 &
    box_pids+=($!)
    started $!
done
for b in $box1 $box2; do
    wait_for "$b ready" 30 curl -fsS "http://$b/ready" || { cat "$tmp"/logs/box*.log; exit 1; }
done
sed -e "s#/var/cache/nginx/planbox#$tmp/cache#" \
    -e "s#server 10.0.0.11:8080#server $box1#" -e "s#server 10.0.0.12:8080#server $box2#" \
    -e "s#listen 80;#listen $front;#" "$here/planbox-cache.conf" > "$tmp/planbox.conf"
cat > "$tmp/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $tmp/temp/body;
    proxy_temp_path $tmp/temp/proxy;
    fastcgi_temp_path $tmp/temp/fastcgi;
    uwsgi_temp_path $tmp/temp/uwsgi;
    scgi_temp_path $tmp/temp/scgi;
    include $tmp/planbox.conf;
}
NGX
nginx -t -c "$tmp/nginx.conf" -p "$tmp" 2>&1 | sed 's/^/    /'
nginx -c "$tmp/nginx.conf" -p "$tmp" &
started $!
wait_for "nginx" 10 curl -fsS "http://$front/health" || { cat "$tmp/logs/error.log"; exit 1; }
echo "    $(nginx -v 2>&1), planbox $("$bin" --version | awk '{print $2}')"

step "1. nginx answers with planbox's bytes: MISS, then HIT"
q="/search?starts_at=2021-01-01T00:00:00Z"
curl -fsS "http://$box1$q" > "$tmp/direct"
curl -fsS -D "$tmp/direct-head" -o /dev/null "http://$box1$q"
echo "    planbox says: $(grep -i '^cache-control' "$tmp/direct-head" | tr -d '\r')"
r=$(get "http://$front$q"); cp "$tmp/body" "$tmp/first"
[ "$r" = "200 MISS" ] && ok "first: $r" || fail "first: $r"
r=$(get "http://$front$q")
[ "$r" = "200 HIT" ] && ok "second: $r" || fail "second: $r"
cmp -s "$tmp/direct" "$tmp/first" && cmp -s "$tmp/direct" "$tmp/body" \
    && ok "same $(wc -c < "$tmp/direct") bytes as planbox itself" || fail "bytes differ from planbox's"
r=$(get "http://$front$q" -H 'Accept-Encoding: gzip, deflate, br;q=0')
r2=$(get "http://$front$q" -H 'Accept-Encoding: gzip')
[ "$r" = "200 MISS" ] && [ "$r2" = "200 HIT" ] && ok "gzip: its own entry ($r, then $r2 for another spelling)" \
    || fail "gzip: $r, $r2"
if grep -qi '^content-encoding: gzip' "$tmp/head"; then
    gunzip -c "$tmp/body" | cmp -s - "$tmp/direct" && ok "gzip body decodes to the same bytes" || fail "gzip body differs"
fi

step "2. twenty clients, one new query, at once: one request reaches a box"
before=$(searches 200)
q2="/search?starts_at=2021-06-01T00:00:00Z&limit=2"
clients=()
for _ in $(seq 20); do
    curl -s -o /dev/null -w '%{http_code}\n' "http://$front$q2" >> "$tmp/codes" &
    clients+=($!)
done
wait "${clients[@]}"
after=$(searches 200)
[ "$(sort -u "$tmp/codes")" = 200 ] && ok "20 answers, all 200" || fail "answers: $(sort "$tmp/codes" | uniq -c | tr '\n' ' ')"
[ $((after - before)) = 1 ] && ok "the boxes answered $((after - before)) of them (proxy_cache_lock)" \
    || fail "the boxes answered $((after - before)) of 20"

step "3. past max-age (2 s): nginx revalidates, planbox answers 304"
sleep 3
before=$(searches 304)
r=$(get "http://$front$q")
sleep 0.5
r2=$(get "http://$front$q")
after=$(searches 304)
echo "    client saw: $r, then $r2"
[ "${r%% *}" = 200 ] && cmp -s "$tmp/direct" "$tmp/body" && ok "client got 200 and the same bytes" || fail "client: $r"
[ $((after - before)) -ge 1 ] && ok "planbox answered $((after - before)) revalidation(s) with 304" \
    || fail "no 304 from planbox"

step "4. box 1 stopped: a query nginx never saw is answered by box 2"
kill "${box_pids[0]}"
wait "${box_pids[0]}" 2>/dev/null || true
q3="/search?ends_at=2021-07-01T00:00:00Z"
r=$(get "http://$front$q3")
[ "$r" = "200 MISS" ] && ok "new query: $r" || fail "new query: $r"

step "5. both boxes stopped: the cache keeps answering"
kill "${box_pids[1]}"
wait "${box_pids[1]}" 2>/dev/null || true
curl -fsS -o /dev/null "http://$box2/health" 2>/dev/null && fail "box 2 still answers" || ok "no box answers"
sleep 3
for qq in "$q" "$q2" "$q3"; do
    r=$(get "http://$front$qq")
    [ "$r" = "200 STALE" ] && ok "$qq: $r" || fail "$qq: $r"
done
get "http://$front$q" > /dev/null
cmp -s "$tmp/direct" "$tmp/body" && ok "still planbox's exact bytes" || fail "stale bytes differ"
r=$(get "http://$front$q" -H 'Accept-Encoding: gzip')
[ "$r" = "200 STALE" ] && ok "gzip entry too: $r" || fail "gzip entry: $r"
r=$(get "http://$front/search?starts_at=2030-01-01T00:00:00Z")
[ "${r%% *}" = 502 ] && ok "a query never asked before: $r (nothing to serve)" || fail "never-asked query: $r"

echo
[ $FAILED -eq 0 ] && echo "nginx cache rehearsal: ok" || echo "nginx cache rehearsal: FAILED"
exit $FAILED
