{{/*
The pod template both workloads run: the StatefulSet (mode single) and the
Deployment (mode ha). One pod spec, so the two modes cannot drift apart in
probes, security context, mounts or the environment the proxy reads.

Only the data volume differs: in mode single the StatefulSet's claim template
(or an emptyDir without persistence) holds the cache and state.db; in mode ha
the cache lives in the bucket and the state in PostgreSQL, and /data is an
emptyDir holding this replica's local tier and the downloads in flight.
*/}}
{{- define "registry-proxy.podTemplate" -}}
{{- $config := include "registry-proxy.config" . | fromYaml -}}
{{- $scheme := include "registry-proxy.scheme" . -}}
metadata:
  labels:
    {{- include "registry-proxy.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A change of config or of the chart's secret values rolls the pods.
    # The secrets' checksum is taken over their values, not the rendered
    # Secret, which holds random values when nothing is given.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secrets: {{ list (pick .Values.admin "token" "existingSecret" "existingSecretKey") .Values.secretKey .Values.registryCredentials | toJson | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "registry-proxy.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.image.pullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: registry-proxy
      image: {{ include "registry-proxy.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["registry-proxy"]
      args: ["serve", "--config", "/etc/registry-proxy/config.yaml"]
      env:
        # These override the config file in the proxy, so they are set to
        # the config's own values: the ConfigMap stays the one truth, even
        # if the image sets them too.
        - name: REGISTRY_PROXY_LISTEN
          value: {{ $config.listen | quote }}
        - name: REGISTRY_PROXY_DATA_DIR
          value: {{ $config.data_dir | quote }}
        # For the admin commands run in the pod (kubectl exec): the admin
        # API is on the admin port, not the default 5000.
        - name: REGISTRY_PROXY_URL
          value: {{ printf "%s://127.0.0.1:%d" ($scheme | lower) (int .Values.admin.port) | quote }}
        - name: REGISTRY_PROXY_ADMIN_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "registry-proxy.adminSecretName" . }}
              key: {{ include "registry-proxy.adminSecretKey" . }}
        # The key that seals stored secrets, from a Secret: it wins over
        # any key file, so whatever config.secrets says, the key outlives
        # pods and PVCs, and no key file is written.
        - name: REGISTRY_PROXY_SECRET_KEY
          valueFrom:
            secretKeyRef:
              name: {{ include "registry-proxy.secretKeySecretName" . }}
              key: {{ include "registry-proxy.secretKeySecretKey" . }}
        {{- if .Values.externalDatabase.existingSecret }}
        {{- if .Values.externalDatabase.existingSecretUrlKey }}
        # The whole PostgreSQL URL, password included: it wins over config.state.url.
        - name: REGISTRY_PROXY_STATE_URL
          valueFrom:
            secretKeyRef:
              name: {{ .Values.externalDatabase.existingSecret }}
              key: {{ .Values.externalDatabase.existingSecretUrlKey }}
        {{- end }}
        {{- if .Values.externalDatabase.existingSecretPasswordKey }}
        # libpq's variable: the password for a config.state.url without one.
        - name: PGPASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ .Values.externalDatabase.existingSecret }}
              key: {{ .Values.externalDatabase.existingSecretPasswordKey }}
        {{- end }}
        {{- end }}
        {{- if .Values.externalS3.existingSecret }}
        # Static keys for the bucket; without them the AWS chain goes on to
        # web identity (IRSA, see serviceAccount.annotations) and instance roles.
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef:
              name: {{ .Values.externalS3.existingSecret }}
              key: {{ .Values.externalS3.existingSecretAccessKeyIdKey }}
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ .Values.externalS3.existingSecret }}
              key: {{ .Values.externalS3.existingSecretSecretAccessKeyKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: registry
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
        # The admin API, status page and /metrics (config admin.listen).
        - name: admin
          containerPort: {{ .Values.admin.port }}
          protocol: TCP
      {{- if .Values.startupProbe.enabled }}
      startupProbe:
        httpGet:
          path: /healthz
          port: registry
          scheme: {{ $scheme }}
        {{- toYaml (omit .Values.startupProbe "enabled") | nindent 8 }}
      {{- end }}
      {{- if .Values.livenessProbe.enabled }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: registry
          scheme: {{ $scheme }}
        {{- toYaml (omit .Values.livenessProbe "enabled") | nindent 8 }}
      {{- end }}
      {{- if .Values.readinessProbe.enabled }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: registry
          scheme: {{ $scheme }}
        {{- toYaml (omit .Values.readinessProbe "enabled") | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        # subPath: the file is replaced by a pod roll (checksum/config), and
        # /etc/registry-proxy stays free for the secrets and tls mounts below.
        - name: config
          mountPath: /etc/registry-proxy/config.yaml
          subPath: config.yaml
          readOnly: true
        - name: data
          mountPath: /data
        - name: tmp
          mountPath: /tmp
        {{- if or .Values.registryCredentials.existingSecret .Values.registryCredentials.files }}
        - name: registry-credentials
          mountPath: /etc/registry-proxy/secrets
          readOnly: true
        {{- end }}
        {{- if .Values.tls.existingSecret }}
        # A whole-directory mount (no subPath), so the kubelet swaps in a
        # rotated certificate and the proxy picks it up without a restart.
        - name: tls
          mountPath: /etc/registry-proxy/tls
          readOnly: true
        {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if and (eq .Values.mode "ha") (eq .Values.ha.podAntiAffinityPreset "soft") }}
  # Replicas on different nodes where the scheduler can, so one node going
  # down takes one replica with it, not all of them.
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "registry-proxy.selectorLabels" . | nindent 16 }}
  {{- else if and (eq .Values.mode "ha") (eq .Values.ha.podAntiAffinityPreset "hard") }}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "registry-proxy.selectorLabels" . | nindent 14 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "registry-proxy.fullname" . }}
    - name: tmp
      emptyDir: {}
    {{- if eq .Values.mode "ha" }}
    # The local tier and the downloads in flight; everything else is in the
    # bucket and in PostgreSQL. Past sizeLimit the kubelet evicts the pod.
    - name: data
      emptyDir:
        sizeLimit: {{ .Values.ha.dataVolume.sizeLimit }}
    {{- else if not .Values.persistence.enabled }}
    # No persistence: the cache and state.db go with the pod.
    - name: data
      emptyDir: {}
    {{- end }}
    {{- if or .Values.registryCredentials.existingSecret .Values.registryCredentials.files }}
    - name: registry-credentials
      secret:
        secretName: {{ include "registry-proxy.registryCredentialsSecretName" . }}
        defaultMode: 0440
    {{- end }}
    {{- if .Values.tls.existingSecret }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.existingSecret }}
        defaultMode: 0440
    {{- end }}
{{- end -}}
