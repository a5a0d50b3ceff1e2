package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/controllers"
)

func newHistoryCommand(o *options) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List the Delivery's adoption, promotions, approvals, rejections and rollbacks from Git's history, with who did what",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := o.cluster()
			if err != nil {
				return err
			}
			d, err := c.delivery(ctx, args[0])
			if err != nil {
				return err
			}
			s, err := c.sourceOf(ctx, d)
			if err != nil {
				return err
			}
			t, err := o.target(s)
			if err != nil {
				return err
			}
			w, err := o.checkout(ctx, t)
			if err != nil {
				return err
			}
			defer w.close()
			entries, err := historyOf(w.head, d.Namespace+"/"+d.Name, limit)
			if err != nil {
				return err
			}
			if len(entries) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "✗ branch %s has no commit about Delivery %s/%s\n", t.branch, d.Namespace, d.Name)
				return nil
			}
			return printHistory(cmd.OutOrStdout(), entries)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "list at most this many records, newest first")
	return cmd
}

// record is one change of a Delivery that Git's history holds.
type record struct {
	when     time.Time
	action   string
	hash     string
	step     string
	author   string
	commit   string
	subject  string
	analysis string
}

// historyOf walks the first parents of head, newest first, and returns the
// commits whose trailers name the Delivery key; a merge of a promotion
// branch sluice pushed is the approval, by whoever merged it.
func historyOf(head *object.Commit, key string, limit int) ([]record, error) {
	var out []record
	c := head
	for c != nil && len(out) < limit {
		changes := changesOf(c.Message)
		if tr := parseTrailers(c.Message); len(changes) == 1 && tr[controllers.TrailerDelivery] != key && c.NumParents() > 1 {
			// A merge made by hand: the approval is its second parent.
			if p, err := c.Parent(1); err == nil {
				if ptr := parseTrailers(p.Message); ptr[controllers.TrailerDelivery] == key {
					changes = []string{p.Message}
				}
			}
		}
		for _, change := range changes {
			tr := parseTrailers(change)
			if tr[controllers.TrailerDelivery] != key {
				continue
			}
			subject := subjectOf(c.Message)
			if len(changes) > 1 {
				subject = subjectOf(change)
			}
			out = append(out, record{
				when: c.Author.When, action: tr[controllers.TrailerAction], hash: tr[controllers.TrailerTemplateHash],
				step: tr[controllers.TrailerStep], author: fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email),
				commit: c.Hash.String()[:10], subject: subject, analysis: analysisOf(change),
			})
		}
		if c.NumParents() == 0 {
			break
		}
		p, err := c.Parent(0)
		if err != nil {
			if err == object.ErrParentNotFound || err == git.ErrMissingAuthor {
				break
			}
			return out, err
		}
		c = p
	}
	return out, nil
}

func printHistory(out io.Writer, entries []record) error {
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "TIME\tACTION\tTEMPLATE\tSTEP\tAUTHOR\tCOMMIT\tMESSAGE")
	for _, e := range entries {
		msg := e.subject
		if e.analysis != "" {
			msg += " — " + e.analysis
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.when.UTC().Format(time.RFC3339), e.action, orDash(e.hash), orDash(e.step), e.author, e.commit, msg)
	}
	return w.Flush()
}

// changesOf splits the message of a commit that records several changes
// at once ("Record <n> changes", each change's message with its trailers,
// separated by "---" paragraphs) into the changes' messages; any other
// message is one change.
func changesOf(message string) []string {
	subject, body, _ := strings.Cut(strings.TrimSpace(strings.ReplaceAll(message, "\r\n", "\n")), "\n\n")
	if !strings.HasPrefix(subject, "Record ") || !strings.HasSuffix(subject, " changes") || !strings.Contains(body, "\n\n---\n\n") {
		return []string{message}
	}
	return strings.Split(body, "\n\n---\n\n")
}

// parseTrailers reads the trailers of a commit message: the "Key: value"
// lines of its last paragraph.
func parseTrailers(message string) map[string]string {
	paragraphs := strings.Split(strings.TrimSpace(strings.ReplaceAll(message, "\r\n", "\n")), "\n\n")
	out := map[string]string{}
	if len(paragraphs) < 2 {
		return out
	}
	for _, line := range strings.Split(paragraphs[len(paragraphs)-1], "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return map[string]string{}
		}
		out[key] = strings.TrimSpace(value)
	}
	return out
}

func subjectOf(message string) string {
	s, _, _ := strings.Cut(strings.TrimSpace(message), "\n")
	return s
}

// bodyOf is the message without its subject and trailers.
func bodyOf(message string) string {
	paragraphs := strings.Split(strings.TrimSpace(message), "\n\n")
	if len(paragraphs) < 2 {
		return ""
	}
	paragraphs = paragraphs[1:]
	if len(parseTrailers(message)) > 0 {
		paragraphs = paragraphs[:len(paragraphs)-1]
	}
	return strings.Join(paragraphs, "\n\n")
}

// analysisOf is what the message says of the analysis, or of the reason
// for a rejection: its "Analysis" line, else the first line of its body.
func analysisOf(message string) string {
	body := bodyOf(message)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "Analysis") {
			return strings.TrimSpace(line)
		}
	}
	if tr := parseTrailers(message); tr[controllers.TrailerAction] == "reject" {
		return truncate(oneLine(body), 120)
	}
	return ""
}
