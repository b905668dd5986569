# bench/nginx-conf.sh: the nginx anchor of the search benchmarks, sourced by
# bench/run.sh, bench/search-scale.sh, bench/pinned.sh and
# bench/connections.sh so all measure against the same server settings.
#
# write_nginx_conf DIR PORT: writes DIR/nginx.conf for a foreground nginx
# (2 workers, sendfile, long keep-alive) serving DIR/www as JSON on
# 127.0.0.1:PORT, with every temp and log path inside DIR.
write_nginx_conf() {
  local dir=$1 port=$2
  mkdir -p "$dir/www" "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/json;
  server {
    listen 127.0.0.1:$port;
    root $dir/www;
  }
}
NGX
}

# One server at a time (planbox or nginx): its PID and nginx's temp DIR,
# stopped and removed when the script exits (trap stop_bench_servers EXIT).
PID="" NGINX_DIR=""
stop_bench_servers() {
  if [[ -n $PID ]]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  if [[ -n $NGINX_DIR ]]; then rm -rf "$NGINX_DIR"; fi
}

# wait_http URL: until URL answers 2xx (15 s at most).
wait_http() {
  for ((i = 0; i < 300; i++)); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
