#!@sh@
# /cgi-bin/greet?name=NAME: a personal greeting, with a greeting id computed by crypto's library.
PATH=@busybox@/bin
. @crypto@/lib/crypto/libcrypto.sh

name=$(echo "${QUERY_STRING-}" | sed -n 's/^\(.*&\)\{0,1\}name=\([^&]*\).*$/\2/p')
name=$(httpd -d "$(echo "${name:-world}" | tr + ' ')")
html=$(echo "$name" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g')
id=$(printf %s "$name" | crypto_digest - | cut -c1-12)

printf 'Content-Type: text/html; charset=utf-8\r\n\r\n'
cat <<HTML
<!DOCTYPE html>
<html><head><title>greeter</title></head>
<body>
<h1>Hello, $html!</h1>
<p>Your greeting id is <code>$id</code> (crypto $(crypto_version)).</p>
<p><a href="/">back</a></p>
</body></html>
HTML
