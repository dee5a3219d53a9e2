# Shared by bench/protocols.sh, bench/bodies.sh and bench/memory.sh (sourced, not run): the
# configurations every one of them starts the same way.

# nginx_upstream WORK PORT: the shared harness's upstream — one worker, a 98-byte 200 for any
# path and method on 127.0.0.1:PORT, its files under WORK/nginx.
nginx_upstream() {
    cat <<NGINX
worker_processes 1;
daemon off;
master_process off;
pid $1/nginx/nginx.pid;
error_log $1/nginx/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    client_body_temp_path $1/nginx/body;
    proxy_temp_path $1/nginx/proxy;
    fastcgi_temp_path $1/nginx/fastcgi;
    uwsgi_temp_path $1/nginx/uwsgi;
    scgi_temp_path $1/nginx/scgi;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        default_type text/plain;
        location / {
            return 200 '{"ok":true,"service":"bench-upstream","payload":"0123456789abcdefghijklmnopqrstuvwxyz0123456789"}\n';
        }
    }
}
NGINX
}

# haproxy_head MAXCONN: HAProxy's global and defaults sections as the shared harness has them
# (one thread, keep-alive both ways, connection reuse); frontends and backends follow.
haproxy_head() {
    cat <<HAPROXY
global
    nbthread 1
    maxconn $1
defaults
    mode http
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
HAPROXY
}
