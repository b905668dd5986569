# bench/nginx-conf.sh: the nginx anchor of the search benchmarks, sourced by
# bench/run.sh and bench/search-scale.sh so both measure against the same
# server settings.
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
