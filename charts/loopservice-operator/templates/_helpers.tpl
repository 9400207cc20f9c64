{{- define "loopservice-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loopservice-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "loopservice-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "loopservice-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "loopservice-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loopservice-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "loopservice-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loopservice-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A CEL expression that holds when `test` (about a container `c`) holds for a container of any of
`lists` of the admission policy's `variables.pod`. Arguments: (list lists test).
*/}}
{{- define "loopservice-operator.anyContainer" -}}
{{- $test := index . 1 -}}
{{- $parts := list -}}
{{- range index . 0 -}}
{{- $parts = append $parts (printf "variables.pod.?%s.orValue([]).exists(c, %s)" . $test) -}}
{{- end -}}
{{- join " || " $parts -}}
{{- end }}

{{- /*
The namespaces whose LoopServices run, as a JSON list: watchNamespaces, and watchNamespace (the
older single value) as one more; empty for all namespaces but excludeNamespaces.
*/}}
{{- define "loopservice-operator.watchNamespaces" -}}
{{- $list := concat (.Values.watchNamespaces | default list) (compact (list .Values.watchNamespace)) | uniq }}
{{- toJson $list }}
{{- end }}
