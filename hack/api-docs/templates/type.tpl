{{- define "type" -}}
{{- $type := .type -}}
{{- if markdownShouldRenderType $type -}}

{{ .heading }} {{ $type.Name }}

{{ if $type.GVK -}}
`apiVersion: {{ $type.GVK.Group }}/{{ $type.GVK.Version }}`, `kind: {{ $type.GVK.Kind }}`
{{- end }}

{{ if $type.IsAlias }}_Underlying type:_ _{{ markdownRenderTypeLink $type.UnderlyingType }}_{{ end }}

{{ $type.Doc }}

{{ $rules := index $type.Markers "kubebuilder:validation:XValidation" -}}
{{ if or $type.Validation $rules -}}
_Validation:_
{{- range $type.Validation }}
- {{ . }}
{{- end }}
{{- range $rules }}
- {{ template "rule" . }}
{{- end }}
{{- end }}

{{ if $type.References -}}
_Appears in:_
{{- range $type.SortedReferences }}
- {{ markdownRenderTypeLink . }}
{{- end }}
{{- end }}

{{ if $type.Members -}}
| Field | Type | Required | Description | Default | Validation |
| --- | --- | --- | --- | --- | --- |
{{ range $type.Members -}}
{{ template "type_members" . }}
{{ end -}}
{{ end -}}

{{ if $type.EnumValues -}}
| Value | Description |
| --- | --- |
{{ range $type.EnumValues -}}
| `{{ .Name }}` | {{ template "doc" .Doc }} |
{{ end -}}
{{ end -}}

{{- end -}}
{{- end -}}

{{- define "rule" -}}
{{ if .Message }}{{ markdownRenderFieldDoc .Message }} ({{ end }}`{{ .Rule }}`{{ if .Message }}){{ end }}
{{- end -}}
