// Test HTTP/1.1 server (Go net/http, stdlib only) used by the beyla-rs integration tests.
// Same routes as servers/http_server.py; /proxy/<rest> calls $UPSTREAM_URL/<rest>?<query> with
// the same method through a keep-alive http.Client (CLIENT spans from Go).
// Usage: goserver -port N
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func noBody(code int) bool { return (code >= 100 && code < 200) || code == 204 || code == 304 }

func reply(w http.ResponseWriter, code int, body []byte, ctype string) {
	if noBody(code) {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

func main() {
	port := flag.Int("port", 0, "port to listen on (127.0.0.1)")
	flag.Parse()
	upstream := strings.TrimRight(os.Getenv("UPSTREAM_URL"), "/")
	client := &http.Client{Timeout: 10 * time.Second}

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p := r.URL.Path
		if c := r.URL.Query().Get("respond"); p == "/status" && c != "" {
			p = "/status/" + c
		}
		if ms := r.URL.Query().Get("ms"); p == "/sleep" && ms != "" {
			p = "/sleep/" + ms
		}
		switch {
		case p == "/hello":
			reply(w, 200, []byte("hello\n"), "text/plain")
		case strings.HasPrefix(p, "/status/"):
			code, err := strconv.Atoi(strings.TrimPrefix(p, "/status/"))
			if err != nil || code < 100 || code > 999 {
				reply(w, 400, []byte("bad status\n"), "text/plain")
				return
			}
			reply(w, code, []byte(fmt.Sprintf("status %d\n", code)), "text/plain")
		case strings.HasPrefix(p, "/sleep/"):
			ms, _ := strconv.Atoi(strings.TrimPrefix(p, "/sleep/"))
			time.Sleep(time.Duration(ms) * time.Millisecond)
			reply(w, 200, []byte("slept\n"), "text/plain")
		case p == "/echo":
			reply(w, 200, body, "application/octet-stream")
		case strings.HasPrefix(p, "/proxy/"):
			if upstream == "" {
				reply(w, 502, []byte("no UPSTREAM_URL\n"), "text/plain")
				return
			}
			url := upstream + strings.TrimPrefix(p, "/proxy")
			if r.URL.RawQuery != "" {
				url += "?" + r.URL.RawQuery
			}
			var rb io.Reader
			if len(body) > 0 {
				rb = bytes.NewReader(body)
			}
			req, err := http.NewRequest(r.Method, url, rb)
			if err != nil {
				reply(w, 502, []byte(err.Error()), "text/plain")
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				reply(w, 502, []byte("upstream error: "+err.Error()+"\n"), "text/plain")
				return
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			reply(w, resp.StatusCode, data, "text/plain")
		default:
			reply(w, 404, []byte("not found\n"), "text/plain")
		}
	})

	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), Handler: h}
	fmt.Fprintf(os.Stderr, "listening on 127.0.0.1:%d\n", *port)
	log.Fatal(srv.ListenAndServe())
}
