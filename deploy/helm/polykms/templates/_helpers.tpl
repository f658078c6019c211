{{/* Names and labels. */}}
{{- define "polykms.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "polykms.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "polykms.labels" -}}
{{ include "polykms.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: kms-plugin
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "polykms.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "polykms.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
TOML rendering. Helm reads every YAML number as a float64, and toToml would write 3000 as
3000.0, which polykms rejects for integer settings: so values are rendered here, whole
numbers as integers, strings through toJson (a JSON string is a valid TOML basic string),
lists as arrays, maps as inline tables; nulls are left out.
*/}}
{{- define "polykms.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "polykms.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "uint64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "polykms.tomlValue" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}
{{- $parts := list -}}
{{- range $k := keys $v | sortAlpha -}}
{{- $e := get $v $k -}}
{{- if not (kindIs "invalid" $e) -}}
{{- $parts = append $parts (printf "%s = %s" (include "polykms.tomlKey" $k) (include "polykms.tomlValue" $e)) -}}
{{- end -}}
{{- end -}}
{ {{- join ", " $parts -}} }
{{- else -}}
{{- fail (printf "polykms: cannot render %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* The key = value lines of a table, nulls left out, keys sorted. */}}
{{- define "polykms.tomlTable" -}}
{{- range $k := keys . | sortAlpha }}
{{- $e := get $ $k }}
{{- if not (kindIs "invalid" $e) }}
{{ include "polykms.tomlKey" $k }} = {{ include "polykms.tomlValue" $e }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The [[backends]] entries as a list of maps, in a fixed order, then extraBackends. */}}
{{- define "polykms.backends" -}}
{{- $out := list -}}
{{- range $type := list "local" "aws" "vault" "gcp" "azure" "pkcs11" "kmip" -}}
{{- $b := get $.Values.backends $type -}}
{{- if and $b $b.enabled -}}
{{- $entry := omit $b "enabled" -}}
{{- $_ := set $entry "type" $type -}}
{{- if not $entry.name -}}{{- fail (printf "backends.%s.name must be set" $type) -}}{{- end -}}
{{- $out = append $out $entry -}}
{{- end -}}
{{- end -}}
{{- range $i, $b := .Values.extraBackends -}}
{{- if not (and $b.name $b.type) -}}{{- fail (printf "extraBackends[%d] needs name and type" $i) -}}{{- end -}}
{{- $out = append $out $b -}}
{{- end -}}
{{- if not $out -}}{{- fail "enable at least one backend (backends.<type>.enabled: true)" -}}{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "polykms.encryptWith" -}}
{{- $backends := include "polykms.backends" . | fromJsonArray -}}
{{- $names := list -}}
{{- range $backends -}}{{- $names = append $names .name -}}{{- end -}}
{{- $with := .Values.encrypt.with -}}
{{- if not $with -}}
{{- if ne (len $names) 1 -}}
{{- fail (printf "several backends are enabled (%s): name the ones that encrypt in encrypt.with" (join ", " $names)) -}}
{{- end -}}
{{- $with = $names -}}
{{- end -}}
{{- range $with -}}
{{- if not (has . $names) -}}{{- fail (printf "encrypt.with names %q, which is no enabled backend" .) -}}{{- end -}}
{{- end -}}
{{- toJson $with -}}
{{- end -}}

{{- define "polykms.config" -}}
# Rendered by the polykms Helm chart from its values; see configs/*.toml for every setting.
[server]
socket = {{ printf "%s/%s" (trimSuffix "/" .Values.socketDir) .Values.socketName | toJson }}
apis = {{ include "polykms.tomlValue" .Values.config.apis }}
status_version = {{ toJson .Values.config.statusVersion }}
provider_name = {{ toJson .Values.config.providerName }}
sandbox = {{ toJson .Values.config.sandbox }}
{{- /* The PKCS#11 vendor's mounted paths are what its library reads by itself. */}}
{{- $readPaths := list }}
{{- range .Values.pkcs11.hostPaths }}
{{- $readPaths = append $readPaths .path }}
{{- end }}
{{- range .Values.config.sandboxReadPaths }}
{{- $readPaths = append $readPaths . }}
{{- end }}
{{- if $readPaths }}
sandbox_read_paths = {{ include "polykms.tomlValue" $readPaths }}
{{- end }}

[http]
# The pod IP replaces this through POLYKMS_HTTP__LISTEN when metrics.listenOnPodIP is true.
listen = {{ printf "127.0.0.1:%d" (int .Values.metrics.port) | toJson }}

[log]
{{- include "polykms.tomlTable" .Values.config.log }}
{{- range $section := list "health" "decrypt" "security" }}
{{- $t := get $.Values.config $section }}
{{- if $t }}

[{{ $section }}]
{{- include "polykms.tomlTable" $t }}
{{- end }}
{{- end }}
{{- range include "polykms.backends" . | fromJsonArray }}

[[backends]]
name = {{ toJson .name }}
type = {{ toJson .type }}
{{- include "polykms.tomlTable" (omit . "name" "type") }}
{{- end }}

[encrypt]
with = {{ include "polykms.tomlValue" (include "polykms.encryptWith" . | fromJsonArray) }}
{{- end -}}
