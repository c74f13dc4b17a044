#!/bin/bash
# ml-platform training instance boot script (rendered by infra/training/user_data.py).
#
# Every spot GPU instance of a training run runs this once at boot:
#   1. stop at once if the run already finished (s3://BUCKET/runs/RUN_ID/_COMPLETE) or expired;
#      when S3 cannot say whether it finished, fail without training (a finished run never re-trains);
#   2. install and start the CloudWatch agent (GPU metrics that `mlp idle` reads);
#   3. restore the run's newest checkpoint, log in to the image's ECR registry and pull it, read the
#      feature store's AUTH token when the run uses it, and start the training command;
#   4. watch the spot interruption notice and the rebalance recommendation, ask the trainer
#      for a checkpoint (SIGUSR1) and upload it inside the two-minute window;
#   5. on success write _COMPLETE, scale the fleet to zero and shut down.
#
# Trainer contract: read MLP_RESUME_FROM (path of the restored checkpoint, empty on a fresh
# start); write checkpoints into CHECKPOINT_DIR atomically (write `name.tmp`, then rename);
# on SIGUSR1 write a checkpoint now. SIGUSR1 goes to the whole process group of the command,
# so every process in it must handle or ignore SIGUSR1 (its default action terminates).
# A run with the feature store gives the trainer FEATURE_STORE_HOST, FEATURE_STORE_PORT and
# FEATURE_STORE_AUTH_TOKEN in its environment.
#
# The trainer gets no AWS credentials: this script moves the checkpoints, and a container runs on
# docker's bridge network, from which the metadata service (hop limit 1) is out of reach.
#
# Environment overrides (tests point these at local fakes): MLP_IMDS_ENDPOINT, MLP_LOG_FILE,
# MLP_CW_AGENT_CONFIG, MLP_SKIP_AGENT_INSTALL=1, MLP_POLL_SECONDS, MLP_CHECKPOINT_GRACE_SECONDS,
# MLP_STOP_GRACE_SECONDS, MLP_SHUTDOWN_COMMAND, MLP_RETRY_ATTEMPTS, MLP_RETRY_FIRST_DELAY_SECONDS,
# AWS_ENDPOINT_URL (read by the AWS CLI).
set -euo pipefail
shopt -s inherit_errexit

# --- values of this run (shell-quoted by the renderer) ---------------------------------------
readonly RUN_ID={{ run_id }}
readonly BUCKET={{ bucket }}
readonly REGION={{ region }}
readonly ASG_NAME={{ asg_name }}
# shellcheck disable=SC2016 # the command is a literal; $ in it expands only when it runs
readonly TRAIN_COMMAND={{ command }}
readonly TRAIN_IMAGE={{ image }}
# The private ECR registry of the image and its region; empty for any other image.
readonly ECR_REGISTRY={{ ecr_registry }}
readonly ECR_REGION={{ ecr_region }}
# Empty when the run does not use the feature store.
readonly FEATURE_STORE_HOST={{ feature_store_host }}
readonly FEATURE_STORE_PORT={{ feature_store_port }}
readonly FEATURE_STORE_AUTH_SECRET_ARN={{ feature_store_auth_secret_arn }}
readonly CHECKPOINT_DIR={{ checkpoint_dir }}
readonly MAX_RUN_SECONDS={{ max_run_seconds }}
readonly SYNC_INTERVAL_SECONDS={{ sync_interval_seconds }}
# The GPU telemetry contract (mlp/gpu_metrics.py); ${aws:InstanceId} is the agent's own placeholder.
# shellcheck disable=SC2016
readonly CW_AGENT_CONFIG_JSON={{ cloudwatch_agent_config }}
# ----------------------------------------------------------------------------------------------

readonly IMDS_ENDPOINT=${MLP_IMDS_ENDPOINT:-http://169.254.169.254}
readonly LOG_FILE=${MLP_LOG_FILE:-/var/log/mlp-training.log}
readonly CW_AGENT_CONFIG=${MLP_CW_AGENT_CONFIG:-/opt/aws/amazon-cloudwatch-agent/etc/mlp-training.json}
readonly CW_AGENT_CTL=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
readonly POLL_SECONDS=${MLP_POLL_SECONDS:-5}
readonly CHECKPOINT_GRACE_SECONDS=${MLP_CHECKPOINT_GRACE_SECONDS:-90}
readonly STOP_GRACE_SECONDS=${MLP_STOP_GRACE_SECONDS:-30}
readonly SHUTDOWN_COMMAND=${MLP_SHUTDOWN_COMMAND:-shutdown -h now}
# 5 tries 2, 4, 8 and 16 s apart: half a minute of S3, ECR or Secrets Manager trouble.
readonly RETRY_ATTEMPTS=${MLP_RETRY_ATTEMPTS:-5}
readonly RETRY_FIRST_DELAY_SECONDS=${MLP_RETRY_FIRST_DELAY_SECONDS:-2}

readonly RUN_PREFIX="runs/$RUN_ID"
readonly COMPLETE_KEY="$RUN_PREFIX/_COMPLETE"
readonly CHECKPOINTS_URI="s3://$BUCKET/$RUN_PREFIX/checkpoints/"
readonly CONTAINER_NAME="mlp-train-$RUN_ID"
export AWS_DEFAULT_REGION=$REGION

STATE_DIR=$(mktemp -d)
readonly STATE_DIR
IMDS_TOKEN=""
INSTANCE_ID=""
TRAINER_PID=""
SHUTTING_DOWN=0
# Read at boot, never logged, handed to the trainer only.
FEATURE_STORE_AUTH_TOKEN=""

mkdir -p "$(dirname "$LOG_FILE")"
exec > >(tee -a "$LOG_FILE") 2>&1

# stderr: functions whose stdout is captured log too.
log() { printf '%s mlp-training[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$RUN_ID" "$*" >&2; }

# Run a command until it succeeds, at most RETRY_ATTEMPTS times, doubling the pause between tries.
retry() {
  local what=$1 attempt delay=$RETRY_FIRST_DELAY_SECONDS
  shift
  for ((attempt = 1; ; attempt++)); do
    "$@" && return 0
    if ((attempt >= RETRY_ATTEMPTS)); then
      log "$what failed $attempt times: giving up"
      return 1
    fi
    log "$what failed (try $attempt of $RETRY_ATTEMPTS): retrying in ${delay} s"
    sleep "$delay"
    delay=$((delay * 2))
  done
}

# --- instance metadata (IMDSv2 only) -----------------------------------------------------------
refresh_imds_token() {
  IMDS_TOKEN=$(curl -sSf --max-time 5 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" \
    "$IMDS_ENDPOINT/latest/api/token")
}

# Print the body of a metadata path; return 1 when it does not exist (404).
imds_get() {
  local path=$1 body_file="$STATE_DIR/imds-body" status attempt
  for attempt in 1 2; do
    status=$(curl -sS --max-time 5 -o "$body_file" -w '%{http_code}' \
      -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "$IMDS_ENDPOINT/latest/$path")
    case $status in
      200) cat "$body_file"; return 0 ;;
      404) return 1 ;;
      401) [[ $attempt == 1 ]] && refresh_imds_token ;;  # the token expired: one fresh try
      *) break ;;
    esac
  done
  log "IMDS answered $status for $path"
  return 2
}

# --- S3 ----------------------------------------------------------------------------------------
# A prefix listing, not HeadObject: with s3:ListBucket granted only under an s3:prefix condition
# (the run's role), HeadObject answers a missing key with 403, indistinguishable from a denial.
# The run id is DNS-safe (validated by the renderer), so it is safe in a JMESPath literal.
count_complete_markers() {
  aws s3api list-objects-v2 --bucket "$BUCKET" --prefix "$COMPLETE_KEY" --output json \
    --query "length(Contents[?Key=='$COMPLETE_KEY'] || \`[]\`)"
}

# A listing that keeps failing exits the script: training on would re-train a finished run.
run_is_complete() {
  local found
  if ! found=$(retry "listing s3://$BUCKET/$COMPLETE_KEY" count_complete_markers); then
    log "cannot tell whether the run is complete: not training"
    exit 1
  fi
  ((found > 0))
}

upload_checkpoints() {
  [[ -d $CHECKPOINT_DIR ]] || return 0
  log "uploading $CHECKPOINT_DIR to $CHECKPOINTS_URI"
  aws s3 sync --no-progress --only-show-errors --exclude '*.tmp' "$CHECKPOINT_DIR" "$CHECKPOINTS_URI"
}

# Newest checkpoint key of the run; empty when there is none. Keys break LastModified ties
# (one-second resolution), so sort by key first: sort_by is stable.
newest_checkpoint_key() {
  local key
  # shellcheck disable=SC2016 # JMESPath literal, not shell
  key=$(aws s3api list-objects-v2 --bucket "$BUCKET" --prefix "$RUN_PREFIX/checkpoints/" --output json \
    --query 'sort_by(sort_by(Contents || `[]`, &Key), &LastModified)[-1].Key')
  [[ $key == null ]] || printf '%s' "${key:1:-1}"  # strip the JSON string quotes
}

restore_newest_checkpoint() {
  local key
  mkdir -p "$CHECKPOINT_DIR"
  key=$(newest_checkpoint_key)
  if [[ -z $key ]]; then
    log "no checkpoint under $CHECKPOINTS_URI: starting fresh"
    MLP_RESUME_FROM=""
  else
    MLP_RESUME_FROM="$CHECKPOINT_DIR/${key#"$RUN_PREFIX/checkpoints/"}"
    log "restoring s3://$BUCKET/$key to $MLP_RESUME_FROM"
    aws s3 cp --no-progress --only-show-errors "s3://$BUCKET/$key" "$MLP_RESUME_FROM"
  fi
  export MLP_RESUME_FROM CHECKPOINT_DIR RUN_ID
}

# A JSON string, or null for an empty value.
json_value() {
  local value=$1
  [[ -n $value ]] || { printf null; return 0; }
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  printf '"%s"' "$value"
}

write_complete_marker() {
  local final_file final_key="" sha256="" body
  final_file=$(find "$CHECKPOINT_DIR" -type f ! -name '*.tmp' -printf '%T@ %p\n' | sort -n | tail -n 1 \
    | cut -d' ' -f2-)
  if [[ -n $final_file ]]; then
    final_key="$RUN_PREFIX/checkpoints/${final_file#"$CHECKPOINT_DIR/"}"
    # An explicit copy, not sync: sync skips a rewrite of equal size and mtime second.
    aws s3 cp --no-progress --only-show-errors "$final_file" "s3://$BUCKET/$final_key"
    sha256=$(sha256sum "$final_file" | cut -d' ' -f1)
  else
    log "the trainer left no checkpoint in $CHECKPOINT_DIR"
  fi
  body=$(printf '{"run_id": %s, "final_checkpoint_key": %s, "sha256": %s, "instance_id": %s, "completed_at": %s}' \
    "$(json_value "$RUN_ID")" "$(json_value "$final_key")" "$(json_value "$sha256")" \
    "$(json_value "$INSTANCE_ID")" "$(json_value "$(date -u +%Y-%m-%dT%H:%M:%SZ)")")
  printf '%s\n' "$body" >"$STATE_DIR/complete.json"
  aws s3 cp --no-progress --only-show-errors --content-type application/json \
    "$STATE_DIR/complete.json" "s3://$BUCKET/$COMPLETE_KEY"
  log "wrote s3://$BUCKET/$COMPLETE_KEY: $body"
}

# --- end of the instance ---------------------------------------------------------------------
scale_fleet_to_zero() {
  log "setting desired capacity of $ASG_NAME to 0"
  aws autoscaling set-desired-capacity --auto-scaling-group-name "$ASG_NAME" --desired-capacity 0
}

shut_down() {
  SHUTTING_DOWN=1
  log "shutting down: $SHUTDOWN_COMMAND"
  bash -c "$SHUTDOWN_COMMAND"
}

# Any unexpected failure: save what exists and shut down; the fleet replaces the instance and
# the replacement resumes from the checkpoint, instead of an idle GPU billing until expiry.
on_exit() {
  local status=$?
  ((status == 0 || SHUTTING_DOWN)) && return
  log "failed with status $status"
  stop_trainer || true
  upload_checkpoints || log "could not upload checkpoints"
  shut_down || true
}
trap on_exit EXIT

# --- CloudWatch agent: GPU metrics in CWAgent, rolled up to the InstanceId dimension ---------
write_cloudwatch_agent_config() {
  mkdir -p "$(dirname "$CW_AGENT_CONFIG")"
  printf '%s\n' "$CW_AGENT_CONFIG_JSON" >"$CW_AGENT_CONFIG"
}

install_cloudwatch_agent() {
  local arch package_dir package url
  [[ -x $CW_AGENT_CTL ]] && return 0
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) log "no CloudWatch agent package for $(uname -m)"; return 1 ;;
  esac
  if command -v dpkg >/dev/null; then
    package_dir=ubuntu package=amazon-cloudwatch-agent.deb
  else
    package_dir=amazon_linux package=amazon-cloudwatch-agent.rpm
  fi
  url="https://amazoncloudwatch-agent-$REGION.s3.$REGION.amazonaws.com/$package_dir/$arch/latest/$package"
  log "installing the CloudWatch agent from $url"
  curl -sSf --retry 3 -o "$STATE_DIR/$package" "$url"
  if [[ $package == *.deb ]]; then dpkg -i -E "$STATE_DIR/$package"; else rpm -U --replacepkgs "$STATE_DIR/$package"; fi
}

# Metrics matter for idle detection, not for the run: a failure here is logged, never fatal.
start_cloudwatch_agent() {
  write_cloudwatch_agent_config
  if [[ ${MLP_SKIP_AGENT_INSTALL:-0} == 1 ]]; then
    log "MLP_SKIP_AGENT_INSTALL=1: agent config written to $CW_AGENT_CONFIG, package not installed"
  elif ! install_cloudwatch_agent; then
    log "WARNING: CloudWatch agent install failed; no GPU metrics from this instance"
    return 0
  fi
  if [[ -x $CW_AGENT_CTL ]]; then
    "$CW_AGENT_CTL" -a fetch-config -m ec2 -s -c "file:$CW_AGENT_CONFIG" \
      || log "WARNING: CloudWatch agent did not start; no GPU metrics from this instance"
  fi
}

# --- the trainer's image and feature store ----------------------------------------------------
# The password is for the instance role and the registry's own region, which may not be the run's.
ecr_login() {
  aws ecr get-login-password --region "$ECR_REGION" \
    | docker login --username AWS --password-stdin "$ECR_REGISTRY"
}

pull_trainer_image() {
  if [[ -n $ECR_REGISTRY ]]; then
    log "logging in to $ECR_REGISTRY"
    retry "docker login to $ECR_REGISTRY" ecr_login
  fi
  log "pulling $TRAIN_IMAGE"
  retry "docker pull $TRAIN_IMAGE" docker pull --quiet "$TRAIN_IMAGE"
}

read_feature_store_auth_token() {
  aws secretsmanager get-secret-value --secret-id "$FEATURE_STORE_AUTH_SECRET_ARN" \
    --query SecretString --output text
}

load_feature_store_auth_token() {
  log "reading the feature store AUTH token from $FEATURE_STORE_AUTH_SECRET_ARN"
  FEATURE_STORE_AUTH_TOKEN=$(retry "reading $FEATURE_STORE_AUTH_SECRET_ARN" read_feature_store_auth_token)
  # One line of an env file: a token with a line break would cut it or add variables.
  if [[ -z $FEATURE_STORE_AUTH_TOKEN || $FEATURE_STORE_AUTH_TOKEN == *[[:cntrl:]]* ]]; then
    log "the secret $FEATURE_STORE_AUTH_SECRET_ARN is empty or not a one-line token"
    return 1
  fi
}

# printf is a builtin: the token is never in a process's arguments.
write_feature_store_env_file() {
  local file=$1
  (
    umask 077
    printf 'FEATURE_STORE_HOST=%s\nFEATURE_STORE_PORT=%s\nFEATURE_STORE_AUTH_TOKEN=%s\n' \
      "$FEATURE_STORE_HOST" "$FEATURE_STORE_PORT" "$FEATURE_STORE_AUTH_TOKEN" >"$file"
  )
}

# --- the trainer -------------------------------------------------------------------------------
start_trainer() {
  if [[ -z $TRAIN_IMAGE ]]; then
    log "starting: $TRAIN_COMMAND"
    # setsid: the command gets its own process group to signal. The wrapper shell traps USR1 so
    # it survives the checkpoint signal while its children see it with their own handlers.
    (
      [[ -z $FEATURE_STORE_HOST ]] || export FEATURE_STORE_HOST FEATURE_STORE_PORT FEATURE_STORE_AUTH_TOKEN
      # shellcheck disable=SC2016 # expanded by the inner shell
      MLP_TRAIN_COMMAND=$TRAIN_COMMAND exec setsid bash -c 'trap : USR1; eval "$MLP_TRAIN_COMMAND"'
    ) &
  else
    start_container
  fi
  TRAINER_PID=$!
}

# Bridge network, no instance credentials: with the metadata hop limit at 1 the container cannot
# reach instance metadata. The feature store's values go in through a root-only env file that
# `docker create` reads and that is deleted before the container starts.
start_container() {
  local env_file="$STATE_DIR/trainer.env" created=0
  local -a options=(--rm --name "$CONTAINER_NAME" --gpus all --network bridge
    -v "$CHECKPOINT_DIR:$CHECKPOINT_DIR" -e MLP_RESUME_FROM -e CHECKPOINT_DIR -e RUN_ID)
  if [[ -n $FEATURE_STORE_HOST ]]; then
    write_feature_store_env_file "$env_file"
    options+=(--env-file "$env_file")
  fi
  log "starting $TRAIN_IMAGE: $TRAIN_COMMAND"
  docker create "${options[@]}" "$TRAIN_IMAGE" sh -c "$TRAIN_COMMAND" >/dev/null && created=1
  rm -f "$env_file"
  if ((!created)); then
    log "docker could not create the trainer container"
    return 1
  fi
  # docker start --attach forwards the signals it receives to the container (--sig-proxy is on),
  # where `sh -c` is PID 1: a single command is exec'd by sh and so receives them itself.
  setsid bash -c 'trap : USR1; "$@"' docker-start docker start --attach "$CONTAINER_NAME" &
}

trainer_running() { [[ -n $TRAINER_PID ]] && kill -0 "$TRAINER_PID" 2>/dev/null; }

signal_trainer() { kill "-$1" -- "-$TRAINER_PID" 2>/dev/null || true; }

stop_trainer() {
  local waited=0
  trainer_running || return 0
  log "stopping the trainer"
  signal_trainer TERM
  while trainer_running && ((waited < STOP_GRACE_SECONDS)); do
    sleep 1
    waited=$((waited + 1))
  done
  signal_trainer KILL
}

# Ask for a checkpoint now, wait for a new file (up to the grace), then upload at once.
checkpoint_now() {
  local reason=$1 marker="$STATE_DIR/checkpoint-requested" deadline
  log "$reason: asking the trainer for a checkpoint"
  touch "$marker"
  signal_trainer USR1
  deadline=$((SECONDS + CHECKPOINT_GRACE_SECONDS))
  while trainer_running && ((SECONDS < deadline)); do
    if [[ -n $(find "$CHECKPOINT_DIR" -type f ! -name '*.tmp' -newer "$marker" -print -quit) ]]; then
      break
    fi
    sleep "$POLL_SECONDS"
  done
  upload_checkpoints || log "WARNING: checkpoint upload failed"
}

# React once per notice: a notice is new when its body differs from the last one handled.
new_notice() {
  local name=$1 path=$2 body seen="$STATE_DIR/notice-$1"
  body=$(imds_get "$path") || return 1
  [[ -f $seen && $(<"$seen") == "$body" ]] && return 1
  printf '%s' "$body" >"$seen"
  log "$name notice: $body"
}

# The run's deadline: the instance's `expires-at` tag when instance metadata tags are on,
# else this instance's start plus the run's max hours.
run_deadline_epoch() {
  local expires_at
  if expires_at=$(imds_get meta-data/tags/instance/expires-at) && date -u -d "$expires_at" +%s 2>/dev/null; then
    return 0
  fi
  echo $(($(date -u +%s) + MAX_RUN_SECONDS))
}

watch_trainer() {
  local deadline=$1 next_sync=$((SECONDS + SYNC_INTERVAL_SECONDS))
  while trainer_running; do
    if new_notice spot-interruption meta-data/spot/instance-action; then
      checkpoint_now "spot interruption"
    fi
    if new_notice rebalance meta-data/events/recommendations/rebalance; then
      checkpoint_now "rebalance recommendation"
    fi
    if (($(date -u +%s) >= deadline)); then
      checkpoint_now "max run time reached"
      stop_trainer
      return 0
    fi
    if ((SECONDS >= next_sync)); then
      upload_checkpoints || log "WARNING: periodic checkpoint upload failed"
      next_sync=$((SECONDS + SYNC_INTERVAL_SECONDS))
    fi
    sleep "$POLL_SECONDS"
  done
}

main() {
  local deadline status
  log "boot: run $RUN_ID, bucket $BUCKET, fleet $ASG_NAME"
  refresh_imds_token
  INSTANCE_ID=$(imds_get meta-data/instance-id)
  log "instance $INSTANCE_ID"
  if run_is_complete; then
    log "the run is already complete: not training"
    scale_fleet_to_zero
    shut_down
    return 0
  fi
  deadline=$(run_deadline_epoch)
  if (($(date -u +%s) >= deadline)); then
    log "the run's time is up: not training"
    scale_fleet_to_zero
    shut_down
    return 0
  fi
  start_cloudwatch_agent
  restore_newest_checkpoint
  [[ -z $TRAIN_IMAGE ]] || pull_trainer_image
  [[ -z $FEATURE_STORE_AUTH_SECRET_ARN ]] || load_feature_store_auth_token
  start_trainer
  watch_trainer "$deadline"
  if wait "$TRAINER_PID"; then status=0; else status=$?; fi
  TRAINER_PID=""
  if (($(date -u +%s) >= deadline)); then
    log "the run's time is up (trainer status $status)"
    upload_checkpoints
    scale_fleet_to_zero
  elif ((status == 0)); then
    log "the trainer succeeded"
    upload_checkpoints
    write_complete_marker
    scale_fleet_to_zero
  else
    log "the trainer failed with status $status: saving checkpoints for the replacement instance"
    upload_checkpoints || log "WARNING: checkpoint upload failed"
  fi
  shut_down
}

main "$@"
