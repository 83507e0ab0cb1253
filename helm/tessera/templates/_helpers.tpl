{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; service objects append "-<service>". */}}
{{- define "tessera.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tessera.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels shared by every object of the release. */}}
{{- define "tessera.labels" -}}
helm.sh/chart: {{ include "tessera.chart" . }}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selects every pod of the release. */}}
{{- define "tessera.releaseSelector" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selects one service's pods; call with (dict "root" $ "svc" "identity"). */}}
{{- define "tessera.selector" -}}
{{ include "tessera.releaseSelector" .root }}
app.kubernetes.io/component: {{ .svc }}
{{- end -}}

{{- define "tessera.svcLabels" -}}
{{ include "tessera.labels" .root }}
app.kubernetes.io/component: {{ .svc }}
{{- end -}}

{{- define "tessera.svcName" -}}
{{- printf "%s-%s" (include "tessera.fullname" .root) .svc -}}
{{- end -}}

{{/* Fully qualified gRPC service name reported by the health service. */}}
{{- define "tessera.grpcService" -}}
{{- $names := dict "identity" "tessera.identity.v1.IdentityService" "consent" "tessera.consent.v1.ConsentService" "profile" "tessera.profile.v1.ProfileService" -}}
{{- get $names .svc -}}
{{- end -}}

{{- define "tessera.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* TLS secret of one service. */}}
{{- define "tessera.tlsSecret" -}}
{{- $svc := get .root.Values.services .svc -}}
{{- default (printf "%s-%s-tls" (include "tessera.fullname" .root) .svc) $svc.tls.existingSecret -}}
{{- end -}}

{{/* A NetworkPolicy peer list from a list of {namespaceSelector, podSelector, cidrs} entries. */}}
{{- define "tessera.peers" -}}
{{- $out := list -}}
{{- range . -}}
{{- range (.cidrs | default list) -}}
{{- $out = append $out (dict "ipBlock" (dict "cidr" .)) -}}
{{- end -}}
{{- $peer := dict -}}
{{- with .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end -}}
{{- with .podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end -}}
{{- if $peer }}{{ $out = append $out $peer }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Which in-chart services each service calls. */}}
{{- define "tessera.calls" -}}
{{- $calls := dict "identity" (list) "consent" (list "identity" "profile") "profile" (list "identity" "consent") -}}
{{- get $calls . | toJson -}}
{{- end -}}
