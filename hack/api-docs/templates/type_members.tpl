{{- /* One table row per field: name, type, required, description, default, validation. */ -}}
{{- define "type_members" -}}
{{- $field := . -}}
{{- $m := $field.Markers -}}
{{- $optional := or (index $m "optional") (index $m "kubebuilder:validation:Optional") (index $m "k8s:optional") (eq $field.Name "metadata") -}}
| `{{ $field.Name }}` | {{ with index $m "kubebuilder:validation:Type" }}{{ index . 0 }}{{ else }}{{ markdownRenderType $field.Type }}{{ end }} | {{ if $optional }}optional{{ else }}required{{ end }} | {{ if eq $field.Name "metadata" }}Refer to the Kubernetes API documentation for the fields of `metadata`.{{ else }}{{ template "doc" $field.Doc }}{{ end }} | {{ with index $m "kubebuilder:default" }}`{{ (index . 0).Value | toJson | replace "|" "\\|" }}`{{ end }} | {{ template "field_validation" $field }} |
{{- end -}}

{{- define "field_validation" -}}
{{- $field := . -}}
{{- $items := list -}}
{{- range $field.Validation -}}
{{- if not (or (eq . "Optional: {}") (eq . "Required: {}") (hasPrefix "Enum: " .) (hasPrefix "Type: " .)) -}}
{{- $items = append $items (. | replace "|" "\\|") -}}
{{- end -}}
{{- end -}}
{{- range index $field.Markers "kubebuilder:validation:Enum" -}}
{{- $values := list -}}
{{- range . }}{{ $values = append $values (printf "`%v`" .) }}{{ end -}}
{{- $items = append $items (printf "one of %s" (join ", " $values)) -}}
{{- end -}}
{{- $typeRules := index $field.Type.Markers "kubebuilder:validation:XValidation" -}}
{{- range index $field.Markers "kubebuilder:validation:XValidation" -}}
{{- if not (has . $typeRules) -}}
{{- $rule := printf "`%s`" (.Rule | replace "|" "\\|") -}}
{{- if .Message }}{{ $rule = printf "%s (%s)" (markdownRenderFieldDoc .Message) $rule }}{{ end -}}
{{- $items = append $items $rule -}}
{{- end -}}
{{- end -}}
{{- join "<br />" $items -}}
{{- end -}}


{{- /* A doc comment in a table cell: wrapped lines joined, paragraphs kept. */ -}}
{{- define "doc" -}}
{{- . | trim | replace "\n\n" "\x00" | replace "\n" " " | markdownRenderFieldDoc | replace "\x00" "<br /><br />" -}}
{{- end -}}
