{{- define "gvDetails" -}}
{{- $gv := . -}}

## {{ $gv.GroupVersionString }}

{{ $gv.Doc }}

Kinds:
{{- range $gv.SortedKinds }}
- {{ $gv.TypeForKind . | markdownRenderTypeLink }}
{{- end }}

{{ range $gv.SortedKinds }}
{{ template "type" (dict "type" ($gv.TypeForKind .) "heading" "###") }}
{{ end }}

### Types used by the kinds

{{ range $gv.SortedTypes }}
{{- if not .GVK }}
{{ template "type" (dict "type" . "heading" "####") }}
{{- end }}
{{- end }}
{{- end -}}
