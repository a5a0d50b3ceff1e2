package stack

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// GitServer serves the bare repositories under Root over Git's smart HTTP
// protocol (git http-backend), with basic auth and pushes enabled, on
// loopback.
type GitServer struct {
	// URL is the base URL under which <name>.git repositories are served.
	URL string
	// Root is the folder of the bare repositories.
	Root string
	// Username and Password are the basic-auth credentials it accepts.
	Username, Password string
	// Token, when set, is a bearer token it accepts too.
	Token string
	// ReadOnlyUsername and ReadOnlyPassword, when set, may fetch but not
	// push.
	ReadOnlyUsername, ReadOnlyPassword string

	addr    string
	handler http.Handler

	mu     sync.Mutex
	server *http.Server
	// onPush is told of each push the server took in.
	onPush func(repository string)
}

// StartGitServer serves root on a free loopback port.
func StartGitServer(root, username, password string) (*GitServer, error) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("the Git server needs git: %w", err)
	}
	execPath, err := exec.Command(gitBin, "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("finding git's exec path: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &GitServer{
		URL:      "http://" + l.Addr().String(),
		Root:     root,
		Username: username,
		Password: password,
		addr:     l.Addr().String(),
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER=" + username,
		},
	}
	s.handler = s.authenticate(s.reportPushes(backend))
	s.serve(l)
	return s, nil
}

func (s *GitServer) serve(l net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	server := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.server = server
	go func() { _ = server.Serve(l) }()
}

// Stop takes the server down at once: the connections in progress are
// dropped, and connections to its address are refused until Restart.
func (s *GitServer) Stop() error {
	s.mu.Lock()
	server := s.server
	s.mu.Unlock()
	return server.Close()
}

// Restart serves again, on the address it served on before Stop.
func (s *GitServer) Restart() error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("serving again on %s: %w", s.addr, err)
	}
	s.serve(l)
	return nil
}

// OnPush calls f with the repository's name after each push the server has
// taken in, before the pusher hears that it has; nil stops the calls.
func (s *GitServer) OnPush(f func(repository string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onPush = f
}

// reportPushes holds the answer to each push until the OnPush function,
// if any, has returned.
func (s *GitServer) reportPushes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repository, push := strings.CutSuffix(r.URL.Path, ".git/git-receive-pack")
		s.mu.Lock()
		onPush := s.onPush
		s.mu.Unlock()
		if !push || r.Method != http.MethodPost || onPush == nil {
			next.ServeHTTP(w, r)
			return
		}
		answer := &heldAnswer{header: http.Header{}, status: http.StatusOK}
		next.ServeHTTP(answer, r)
		onPush(strings.TrimPrefix(repository, "/"))
		for k, v := range answer.header {
			w.Header()[k] = v
		}
		w.WriteHeader(answer.status)
		_, _ = w.Write(answer.body.Bytes())
	})
}

// heldAnswer is an HTTP answer kept until it may be sent.
type heldAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *heldAnswer) Header() http.Header         { return a.header }
func (a *heldAnswer) WriteHeader(status int)      { a.status = status }
func (a *heldAnswer) Write(b []byte) (int, error) { return a.body.Write(b) }

// authenticate lets through only requests with the server's credentials,
// and pushes only with the read-write ones.
func (s *GitServer) authenticate(next http.Handler) http.Handler {
	equal := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		push := strings.HasSuffix(r.URL.Path, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
		user, pass, basic := r.BasicAuth()
		bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case basic && equal(user, s.Username) && equal(pass, s.Password):
		case hasBearer && s.Token != "" && equal(bearer, s.Token):
		case basic && s.ReadOnlyUsername != "" && equal(user, s.ReadOnlyUsername) && equal(pass, s.ReadOnlyPassword):
			if push {
				http.Error(w, "this user may not push", http.StatusForbidden)
				return
			}
		default:
			w.Header().Set("WWW-Authenticate", `Basic realm="sluice"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CreateRepository creates an empty bare repository <name>.git whose default
// branch is main, and returns its URL.
func (s *GitServer) CreateRepository(name string) (string, error) {
	dir := filepath.Join(s.Root, name+".git")
	if _, err := os.Stat(dir); err == nil {
		return "", fmt.Errorf("repository %s exists", name)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, args := range [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=main", dir},
		{"-C", dir, "config", "http.receivepack", "true"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return s.RepositoryURL(name), nil
}

// RepositoryURL is the URL of repository <name>.git.
func (s *GitServer) RepositoryURL(name string) string {
	return s.URL + "/" + name + ".git"
}

// Close stops serving.
func (s *GitServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	server := s.server
	s.mu.Unlock()
	return server.Shutdown(ctx)
}
