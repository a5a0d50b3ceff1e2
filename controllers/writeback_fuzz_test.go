package controllers

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// FuzzTruncate: a rejection reason cut to fit Git stays valid UTF-8, within
// its bound, and a prefix of the reason.
func FuzzTruncate(f *testing.F) {
	f.Add("metric success-rate failed", 10)
	f.Add("ünïcödé ✓ analysis", 3)
	f.Add("日本語の理由", 4)
	f.Fuzz(func(t *testing.T, reason string, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		got := truncate(reason, n)
		if len(got) > n && len(reason) > n {
			t.Fatalf("truncate(%q, %d) = %q, longer than %d bytes", reason, n, got, n)
		}
		if !strings.HasPrefix(reason, got) {
			t.Fatalf("truncate(%q, %d) = %q, not a prefix", reason, n, got)
		}
		if utf8.ValidString(reason) && !utf8.ValidString(got) {
			t.Fatalf("truncate(%q, %d) = %q, not valid UTF-8", reason, n, got)
		}
	})
}

// FuzzPromotionBranch: whatever a policy's template and a Delivery's names
// render, the promotion branch is a valid branch name, and never the
// branch Flux follows or sluice pushes its records to.
func FuzzPromotionBranch(f *testing.F) {
	f.Add("sluice/promote/{{.Namespace}}/{{.Name}}/{{.Step}}-{{.Hash}}", "shop", "web", "2")
	f.Add("{{.Step}}-{{.Hash}}", "shop", "web", "1")
	f.Add("main", "shop", "web", "1")
	f.Add("release/{{.Name}} {{.Step}}..{{.Hash}}", "shop", "web", "3")
	f.Add("{{.Missing}}", "shop", "web", "3")
	f.Add("{{.Name}}.lock", "a", "b", "1")
	f.Fuzz(func(t *testing.T, tmpl, namespace, name, step string) {
		w := writeBack{
			obj:    &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}},
			policy: &deliveryv1.DeliveryPolicySpec{Git: deliveryv1.GitWriteBack{Push: deliveryv1.GitPush{PromotionBranchTemplate: tmpl}}},
			source: &gitSource{branch: "main"},
			git:    gitSettings{branch: "records"},
		}
		got := w.branchName(step, "6d4d78d2f4")
		if got == "main" || got == "records" {
			t.Fatalf("the promotion branch of %q is the tracked branch %q", tmpl, got)
		}
		// Names a Kubernetes object can have make a valid default.
		if gitops.ValidBranch(namespace+"/"+name+"/"+step) == nil && gitops.ValidBranch(got) != nil {
			t.Fatalf("the promotion branch of %q is %q, not a branch name", tmpl, got)
		}
	})
}

// FuzzCommitMessage: whatever a policy's message template renders, the
// commit has a subject of its own and ends with sluice's trailers as its
// last paragraph, where Git reads them; a template that cannot render is
// an error that says so.
func FuzzCommitMessage(f *testing.F) {
	f.Add("Promote {{.Delivery.Name}} to {{.Hash}}", "web")
	f.Add("", "web")
	f.Add("{{if false}}x{{end}}", "web")
	f.Add("\n\n\n", "web")
	f.Add("{{.Missing}}", "web")
	f.Add("{{.Delivery.Name}}\n\nSluice-Action: approve\nSluice-Delivery: other/x", "web")
	f.Add("{{template \"x\"}}", "web")
	f.Fuzz(func(t *testing.T, tmpl, name string) {
		if len(validation.IsDNS1123Subdomain(name)) > 0 {
			// The API server holds only Deliveries with such names.
			return
		}
		obj := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}
		step := int32(2)
		message, err := commitMessage("approve", tmpl, "Approve shop/"+name,
			map[string]any{"Delivery": obj, "Hash": "6d4d78d2f4", "Step": &step, "Action": "approve"})
		if err != nil {
			if !errors.Is(err, gitops.ErrCannotEdit) {
				t.Fatalf("template %q: %v, want an ErrCannotEdit", tmpl, err)
			}
			return
		}
		block := trailers(client.ObjectKeyFromObject(obj), "approve", "6d4d78d2f4", &step)
		full := strings.TrimLeft(message+block, "\n")
		paragraphs := strings.Split(strings.TrimRight(full, "\n"), "\n\n")
		if len(paragraphs) < 2 {
			t.Fatalf("template %q: the trailers are the commit's subject:\n%s", tmpl, full)
		}
		if last := paragraphs[len(paragraphs)-1]; last != strings.Trim(block, "\n") {
			t.Fatalf("template %q: the last paragraph is\n%s\nwant the trailers\n%s", tmpl, last, block)
		}
	})
}
