# `down`: stop exactly what `up` started and remove its state, mounts and network bridge.

unmount_under_state() {
  [[ -d "$STATE_DIR" ]] || return 0
  local real mp i mps
  real="$(readlink -f "$STATE_DIR")"
  for i in 1 2 3; do
    # mount points under the state dir, deepest first (mountinfo field 5; octal escapes kept)
    mapfile -t mps < <(awk -v d="$real" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    ((${#mps[@]})) || return 0
    for mp in "${mps[@]}"; do
      mp="$(printf '%b' "${mp//\\/\\0}")"
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done
  done
}

remove_kubepods_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

cmd_down() {
  need_root
  stop_component kueue
  stop_component kwok
  stop_api_gateway
  stop_component kubelet
  stop_containers
  stop_component containerd
  kill_leftover_shims
  stop_component kube-scheduler
  stop_component kube-controller-manager
  stop_component kube-apiserver
  stop_component etcd
  unmount_under_state
  # pod log dirs the kubelet made (it always writes to /var/log/pods and /var/log/containers):
  # those that were not there before `up`
  local d
  if [[ -f "$STATE_DIR/var-log-pods.before" ]]; then
    for d in /var/log/pods/*; do
      [[ -e "$d" ]] || continue
      grep -qxF "$(basename "$d")" "$STATE_DIR/var-log-pods.before" || rm -rf "$d"
    done
    find /var/log/containers -maxdepth 1 -xtype l -delete 2>/dev/null || true
  fi
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  restore_sysctls
  remove_kubepods_cgroups
  if [[ -d "$STATE_DIR" ]]; then
    if grep -qF " $(readlink -f "$STATE_DIR")" /proc/self/mountinfo; then
      log "WARNING: mounts remain under $STATE_DIR; not removing it"
      return 1
    fi
    rm -rf "$STATE_DIR"
  fi
  log "cluster down"
}
