# The Secrets kubernetes.yaml mounts, created from files (never committed, never in a manifest).
# The pepper, once, before the first start (keep a copy: every key depends on it):
python3 -c "import secrets; print(secrets.token_urlsafe(32))" > pepper.txt
kubectl create secret generic keyguard-pepper --from-file=pepper=./pepper.txt
# The client's key, created with the CLI inside the cluster and stored straight into a Secret:
kubectl exec deploy/keyguard -- keyguard keys create --name agent-client --scope agents:read --quiet > api-key.txt
kubectl create secret generic agent-client-api-key --from-file=api-key=./api-key.txt
rm api-key.txt
