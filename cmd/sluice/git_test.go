package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func gitSource(url string, ref *sourcev1.GitRepositoryRef) *source {
	return &source{repo: &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "shop"},
		Spec: sourcev1.GitRepositorySpec{URL: url, Reference: ref}}}
}

// TestTarget: where and as whom a command commits, and with which
// credentials, none of which stays in the URL it prints.
func TestTarget(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("SLUICE_GIT_TOKEN", "")

	main := &sourcev1.GitRepositoryRef{Branch: "main"}
	o := &options{}
	if _, err := o.target(gitSource("https://git.example/shop.git", main)); err == nil || !strings.Contains(err.Error(), "who are you?") {
		t.Fatalf("without an identity: %v", err)
	}
	if err := os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[user]\n\tname = Ada Approver\n\temail = ada@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := o.target(gitSource("https://ada:s3cret@git.example/shop.git", main))
	if err != nil {
		t.Fatal(err)
	}
	if tg.url != "https://git.example/shop.git" || tg.branch != "main" || tg.author.Name != "Ada Approver" || tg.author.Email != "ada@example.com" {
		t.Fatalf("target = %+v", tg)
	}
	if a, ok := tg.auth.(*githttp.BasicAuth); !ok || a.Username != "ada" || a.Password != "s3cret" {
		t.Fatalf("credentials of the URL: %#v", tg.auth)
	}

	t.Setenv("SLUICE_GIT_TOKEN", "t0ken")
	o.git.authorName = "Bob"
	tg, err = o.target(gitSource("https://ada:s3cret@git.example/shop.git", nil))
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := tg.auth.(*githttp.BasicAuth); !ok || a.Username != "git" || a.Password != "t0ken" {
		t.Fatalf("a token: %#v", tg.auth)
	}
	if tg.branch != "master" || tg.author.Name != "Bob" || tg.author.Email != "ada@example.com" {
		t.Fatalf("target = %+v", tg)
	}

	if _, err := o.target(gitSource("https://git.example/shop.git", &sourcev1.GitRepositoryRef{Tag: "v1"})); err == nil || !strings.Contains(err.Error(), "follows no branch") {
		t.Fatalf("a pinned source: %v", err)
	}
}

func TestPullRequestHint(t *testing.T) {
	branch := "sluice/promote/shop/web/2-6d4d78d2f4"
	for url, want := range map[string]string{
		"https://user:pass@github.com/acme/shop.git": ": https://github.com/acme/shop/compare/sluice/promote/shop/web/2-6d4d78d2f4?expand=1",
		"https://gitlab.com/acme/shop":               ": https://gitlab.com/acme/shop/-/merge_requests/new?merge_request[source_branch]=sluice%2Fpromote%2Fshop%2Fweb%2F2-6d4d78d2f4",
		"https://git.example/shop.git":               "",
	} {
		o := &options{git: gitFlags{url: url}}
		if got := pullRequestHint(o, branch); got != want {
			t.Errorf("%s: %q, want %q", url, got, want)
		}
	}
}
