// Test HTTP/1.1 server (Go net/http, stdlib only) used by the beyla-rs integration tests.
// Same routes as servers/http_server.py; /proxy/<rest> calls $UPSTREAM_URL/<rest>?<query> with
// the same method through a keep-alive http.Client (CLIENT spans from Go).
// Usage: goserver -port N [-tls-cert CERT -tls-key KEY]
//
// With -tls-cert/-tls-key it serves HTTPS (crypto/tls) over HTTP/1.1 only (no h2 by ALPN). An
// https:// $UPSTREAM_URL is verified against the system roots, which honour $SSL_CERT_FILE.
//
// `goserver client ...` is the HTTPS client fixture instead (see runClient).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
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
	if len(os.Args) > 1 && os.Args[1] == "client" {
		runClient(os.Args[2:])
		return
	}
	port := flag.Int("port", 0, "port to listen on (127.0.0.1)")
	tlsCert := flag.String("tls-cert", "", "serve HTTPS with this certificate chain (PEM)")
	tlsKey := flag.String("tls-key", "", "... and this key (PEM)")
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
	if *tlsCert != "" {
		// A non-nil empty map: HTTP/1.1 only, no h2 by ALPN.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		log.Fatal(srv.ListenAndServeTLS(*tlsCert, *tlsKey))
	}
	log.Fatal(srv.ListenAndServe())
}

// clientResult is the one JSON line the client prints: [status, body length] per call.
type clientResult struct {
	New                  [][2]int `json:"new"`
	Keepalive            [][2]int `json:"keepalive"`
	KeepaliveConnections int64    `json:"keepalive_connections"`
}

// runClient: the HTTPS client fixture, same interface as servers/https_client.py:
//
//	goserver client -base https://127.0.0.1:P -ca CA [-listen L] [-wait]
//	    [-new GET:/a,POST:/b] [-keepalive GET:/c,...]
//
// -new: one connection per call (keep-alives disabled); -keepalive: all calls on one
// keep-alive connection. POST/PUT send the 12-byte body "twelve bytes". HTTP/1.1 only.
// -listen binds 127.0.0.1:L first (so that a daemon selecting port L instruments this
// process); -wait then waits for a line on stdin before the calls and, after printing the
// result, for stdin to close before exiting.
func runClient(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	base := fs.String("base", "", "base URL, e.g. https://127.0.0.1:8443")
	ca := fs.String("ca", "", "CA certificate (PEM) to trust")
	listen := fs.Int("listen", 0, "bind a listener on 127.0.0.1:L first")
	wait := fs.Bool("wait", false, "wait for a stdin line before the calls, and stdin EOF after")
	newCalls := fs.String("new", "", "calls on new connections")
	kaCalls := fs.String("keepalive", "", "calls on one keep-alive connection")
	fs.Parse(args)

	if *listen != 0 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *listen))
		if err != nil {
			log.Fatal(err)
		}
		defer l.Close()
	}
	stdin := bufio.NewReader(os.Stdin)
	if *wait {
		if _, err := stdin.ReadString('\n'); err != nil {
			log.Fatal("waiting for go: ", err)
		}
	}
	pool := x509.NewCertPool()
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatal("no certificate in ", *ca)
		}
	}
	var dials int64
	transport := func(keepAlive bool) *http.Transport {
		d := &net.Dialer{Timeout: 10 * time.Second}
		return &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				atomic.AddInt64(&dials, 1)
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: 1,
		}
	}
	do := func(c *http.Client, call string) [2]int {
		method, path, ok := strings.Cut(call, ":")
		if !ok {
			log.Fatalf("bad call %q (want METHOD:PATH)", call)
		}
		var body io.Reader
		if method == "POST" || method == "PUT" {
			body = strings.NewReader("twelve bytes")
		}
		req, err := http.NewRequest(method, *base+path, body)
		if err != nil {
			log.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return [2]int{resp.StatusCode, len(data)}
	}
	res := clientResult{New: [][2]int{}, Keepalive: [][2]int{}}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	newClient := &http.Client{Transport: transport(false), Timeout: 20 * time.Second}
	for _, call := range split(*newCalls) {
		res.New = append(res.New, do(newClient, call))
	}
	kaTransport := transport(true)
	kaClient := &http.Client{Transport: kaTransport, Timeout: 20 * time.Second}
	before := atomic.LoadInt64(&dials)
	for _, call := range split(*kaCalls) {
		res.Keepalive = append(res.Keepalive, do(kaClient, call))
	}
	res.KeepaliveConnections = atomic.LoadInt64(&dials) - before
	kaTransport.CloseIdleConnections()
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if *wait {
		io.Copy(io.Discard, stdin)
	}
}
