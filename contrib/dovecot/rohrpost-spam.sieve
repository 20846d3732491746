# File spam into Junk by rohrpost's verdict (the same header SpamAssassin writes, so existing
# rules keep working). Compile with: sievec rohrpost-spam.sieve
require ["fileinto", "mailbox"];

if header :is "X-Spam-Flag" "YES" {
  fileinto :create "Junk";
  stop;
}
