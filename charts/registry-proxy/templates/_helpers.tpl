{{/*
Names, labels and the values the templates share. Every template renders one
resource; what several of them need to agree on (the config, the secret names,
the scheme) is computed here, once.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "registry-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of every resource: fullnameOverride, else <release>-<chart>, or just
<release> when the release name already contains the chart name.
*/}}
{{- define "registry-proxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "registry-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "registry-proxy.labels" -}}
helm.sh/chart: {{ include "registry-proxy.chart" . }}
{{ include "registry-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the pods; they never change across upgrades. */}}
{{- define "registry-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "registry-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The service account the pods run as. */}}
{{- define "registry-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "registry-proxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "registry-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/*
The proxy's config.yaml, as YAML text: .Values.config with the chart's
defaults filled in where it leaves them out.

  listen        0.0.0.0:<containerPort>   every pod address, so Services and probes reach it
  admin.listen  0.0.0.0:<admin.port>      the admin API, status page and /metrics, apart
                                          from the registry port the Service exposes
  data_dir      /data                     the volume (PVC or emptyDir) mounted there
  tls           cert_file/key_file        the mounted tls.existingSecret, when that is set

A key that .Values.config does set wins. Callers that need single keys read
it back with: include "registry-proxy.config" . | fromYaml
*/}}
{{- define "registry-proxy.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if not (hasKey $config "listen") -}}
{{- $_ := set $config "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) -}}
{{- end -}}
{{- if eq (int .Values.admin.port) (int .Values.containerPort) -}}
{{- fail "admin.port must differ from containerPort: the admin API has a listener of its own" -}}
{{- end -}}
{{- $admin := $config.admin | default dict -}}
{{- if not (hasKey $admin "listen") -}}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.admin.port)) -}}
{{- $_ := set $config "admin" $admin -}}
{{- end -}}
{{- /* Behind the Ingress, clients reach the token realm at its host, with https when it terminates TLS. */ -}}
{{- if and .Values.ingress.enabled .Values.ingress.hosts (not (hasKey $config "external_url")) -}}
{{- $scheme := ternary "https" "http" (gt (len .Values.ingress.tls) 0) -}}
{{- $_ := set $config "external_url" (printf "%s://%s" $scheme (first .Values.ingress.hosts).host) -}}
{{- end -}}
{{- if not (hasKey $config "data_dir") -}}
{{- $_ := set $config "data_dir" "/data" -}}
{{- end -}}
{{- if .Values.tls.existingSecret -}}
{{- $files := dict "cert_file" "/etc/registry-proxy/tls/tls.crt" "key_file" "/etc/registry-proxy/tls/tls.key" -}}
{{- $_ := set $config "tls" (mustMergeOverwrite $files ($config.tls | default dict)) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
HTTPS when the rendered config serves TLS, else HTTP: for probes and the
ServiceMonitor. Both listeners, registry and admin, serve with config.tls.
*/}}
{{- define "registry-proxy.scheme" -}}
{{- $config := include "registry-proxy.config" . | fromYaml -}}
{{- $tls := $config.tls | default dict -}}
{{- if $tls.cert_file -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/*
"true" when /metrics needs no token: the proxy's metrics.public, default true.
The proxy also reads "yes"/"no" as booleans, so they are read here the same way.
*/}}
{{- define "registry-proxy.metricsPublic" -}}
{{- $config := include "registry-proxy.config" . | fromYaml -}}
{{- $metrics := $config.metrics | default dict -}}
{{- if hasKey $metrics "public" -}}
{{- has ($metrics.public | toString | lower) (list "true" "yes") -}}
{{- else -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the admin token. */}}
{{- define "registry-proxy.adminSecretName" -}}
{{- .Values.admin.existingSecret | default (include "registry-proxy.fullname" .) -}}
{{- end -}}

{{- define "registry-proxy.adminSecretKey" -}}
{{- if .Values.admin.existingSecret -}}{{ .Values.admin.existingSecretKey }}{{- else -}}admin-token{{- end -}}
{{- end -}}

{{/* The Secret and key holding the secret key (base64 of 32 bytes). */}}
{{- define "registry-proxy.secretKeySecretName" -}}
{{- .Values.secretKey.existingSecret | default (include "registry-proxy.fullname" .) -}}
{{- end -}}

{{- define "registry-proxy.secretKeySecretKey" -}}
{{- if .Values.secretKey.existingSecret -}}{{ .Values.secretKey.existingSecretKey }}{{- else -}}secret-key{{- end -}}
{{- end -}}

{{/* The Secret whose files are mounted at /etc/registry-proxy/secrets, or "" for none. */}}
{{- define "registry-proxy.registryCredentialsSecretName" -}}
{{- if .Values.registryCredentials.existingSecret -}}
{{- .Values.registryCredentials.existingSecret -}}
{{- else if .Values.registryCredentials.files -}}
{{- printf "%s-registry-credentials" (include "registry-proxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
