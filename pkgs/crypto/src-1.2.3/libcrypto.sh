# libcrypto.sh - crypto 1.2.3: SHA-256 digests and HMAC-SHA256 for busybox sh scripts.
# Source it (`. <crypto>/lib/crypto/libcrypto.sh`); it needs the busybox applets sha256sum, od,
# tr, xxd and awk in PATH. Functions return non-zero on error; names starting with _ are private.

CRYPTO_VERSION=1.2.3

# crypto_version: prints the library's version.
crypto_version() { echo "$CRYPTO_VERSION"; }

# crypto_digest FILE|-: prints the SHA-256 of FILE (or of stdin for - or no argument), in hex.
crypto_digest() {
  _crypto_d=$(sha256sum -- "${1:--}") || return 1
  echo "${_crypto_d%% *}"
}

# crypto_hex: prints the bytes read from stdin as lowercase hex, on one line.
crypto_hex() { od -An -v -tx1 | tr -d ' \n'; echo; }

# crypto_unhex: writes the bytes whose hex is read from stdin.
crypto_unhex() { xxd -r -p; }

# crypto_hmac KEYHEX FILE|-: prints HMAC-SHA256 (RFC 2104) of FILE (or stdin) under the key given
# in hex.
crypto_hmac() {
  _crypto_k=$(echo "$1" | tr A-F a-f)
  case $_crypto_k in
    *[!0-9a-f]*) echo "crypto_hmac: key is not hex: $1" >&2; return 2 ;;
  esac
  if [ $((${#_crypto_k} % 2)) -ne 0 ]; then
    echo "crypto_hmac: key has an odd number of hex digits" >&2; return 2
  fi
  _crypto_i=$({ _crypto_pad "$_crypto_k" 54 | crypto_unhex; cat -- "${2:--}"; } | crypto_digest -) ||
    return 1
  { _crypto_pad "$_crypto_k" 92 | crypto_unhex; echo "$_crypto_i" | crypto_unhex; } | crypto_digest -
}

# _crypto_pad KEYHEX BYTE: the key, zero-padded or cut to the 64-byte block, XOR BYTE; in hex.
_crypto_pad() {
  awk -v k="$1" -v p="$2" 'BEGIN {
    x = "0123456789abcdef"
    for (i = 0; i < 64; i++) {
      h = substr(k, 2 * i + 1, 2)
      v = (h == "") ? 0 : (index(x, substr(h, 1, 1)) - 1) * 16 + index(x, substr(h, 2, 1)) - 1
      printf "%02x", xor(v, p)
    }
  }'
}
