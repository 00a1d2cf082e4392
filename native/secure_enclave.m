/*
 * The Secure Enclave device key: create, find, sign, delete. Nothing else:
 * encodings (X9.63 point to SPKI, DER signature to R||S) and every decision
 * live in credctl/signers/secure_enclave.py. Built only on darwin, with ARC.
 */
#import <Foundation/Foundation.h>
#import <LocalAuthentication/LocalAuthentication.h>
#import <Security/Security.h>

#include <string.h>

#include "credctl_native.h"

/* Longer than any Touch ID prompt should stay open; the daemon's client waits 65 s. */
#define PROMPT_TIMEOUT_SECONDS 60

static void set_error(char *err, size_t err_cap, NSString *message) {
    if (err == NULL || err_cap == 0) {
        return;
    }
    const char *text = message.UTF8String;
    strlcpy(err, text != NULL ? text : "unknown error", err_cap);
}

static NSString *status_text(OSStatus status) {
    if (status == errSecMissingEntitlement) {
        return @"this Python is not code-signed with a keychain-access-groups entitlement; "
               @"Secure Enclave keys live in the data protection keychain, which needs one "
               @"(errSecMissingEntitlement, OSStatus -34018): run `credctl init --backend "
               @"software`, or use a Python signed with that entitlement";
    }
    NSString *text = CFBridgingRelease(SecCopyErrorMessageString(status, NULL));
    return [NSString stringWithFormat:@"%@ (OSStatus %d)", text ?: @"unknown error", (int)status];
}

static BOOL is_cancellation(NSError *error) {
    if ([error.domain isEqualToString:LAErrorDomain]) {
        return error.code == LAErrorUserCancel || error.code == LAErrorSystemCancel ||
               error.code == LAErrorAppCancel;
    }
    return [error.domain isEqualToString:NSOSStatusErrorDomain] && error.code == errSecUserCanceled;
}

/* Takes ownership of `error` (which may be NULL). */
static int fail_with(CFErrorRef error, NSString *what, char *err, size_t err_cap) {
    NSError *failure = CFBridgingRelease(error);
    if (failure != nil && is_cancellation(failure)) {
        set_error(err, err_cap, @"authentication cancelled");
        return CREDCTL_SE_CANCELLED;
    }
    if (failure != nil && [failure.domain isEqualToString:NSOSStatusErrorDomain]) {
        what = [NSString stringWithFormat:@"%@: %@", what, status_text((OSStatus)failure.code)];
    } else if (failure != nil) {
        what = [NSString stringWithFormat:@"%@: %@", what, failure.localizedDescription];
    }
    set_error(err, err_cap, what);
    return CREDCTL_SE_ERROR;
}

static NSString *utf8_string(const char *text, NSString *fallback) {
    NSString *string = text != NULL ? [NSString stringWithUTF8String:text] : nil;
    return string.length > 0 ? string : fallback;
}

/* Every query names the Secure Enclave token, so keys of another kind that
 * happen to carry the same tag are never touched. */
static NSMutableDictionary *key_query(const char *tag) {
    NSMutableDictionary *query = [@{
        (id)kSecClass : (id)kSecClassKey,
        (id)kSecAttrKeyType : (id)kSecAttrKeyTypeECSECPrimeRandom,
        (id)kSecAttrTokenID : (id)kSecAttrTokenIDSecureEnclave,
        (id)kSecAttrApplicationTag : [NSData dataWithBytes:tag length:strlen(tag)],
    } mutableCopy];
    if (@available(macOS 10.15, *)) {
        query[(id)kSecUseDataProtectionKeychain] = @YES;
    }
    return query;
}

/* The private key with `tag`, bound to `context` for any authentication. */
static int find_key(const char *tag, LAContext *context, SecKeyRef *key, char *err, size_t err_cap) {
    NSMutableDictionary *query = key_query(tag);
    query[(id)kSecAttrKeyClass] = (id)kSecAttrKeyClassPrivate;
    query[(id)kSecReturnRef] = @YES;
    if (context != nil) {
        query[(id)kSecUseAuthenticationContext] = context;
    }
    CFTypeRef item = NULL;
    OSStatus status = SecItemCopyMatching((__bridge CFDictionaryRef)query, &item);
    if (status == errSecItemNotFound) {
        set_error(err, err_cap, [NSString stringWithFormat:@"no Secure Enclave key with tag %s", tag]);
        return CREDCTL_SE_NOT_FOUND;
    }
    if (status != errSecSuccess || item == NULL) {
        set_error(err, err_cap,
                  [NSString stringWithFormat:@"key lookup failed: %@", status_text(status)]);
        return CREDCTL_SE_ERROR;
    }
    *key = (SecKeyRef)item;
    return CREDCTL_SE_OK;
}

static int copy_public_point(SecKeyRef private_key, unsigned char *out, size_t *out_len, char *err,
                             size_t err_cap) {
    SecKeyRef public_key = SecKeyCopyPublicKey(private_key);
    if (public_key == NULL) {
        set_error(err, err_cap, @"the key has no public key");
        return CREDCTL_SE_ERROR;
    }
    CFErrorRef error = NULL;
    CFDataRef data = SecKeyCopyExternalRepresentation(public_key, &error);
    CFRelease(public_key);
    if (data == NULL) {
        return fail_with(error, @"cannot export the public key", err, err_cap);
    }
    NSData *point = CFBridgingRelease(data);
    if (point.length > *out_len) {
        set_error(err, err_cap, @"the public key is larger than expected");
        return CREDCTL_SE_ERROR;
    }
    memcpy(out, point.bytes, point.length);
    *out_len = point.length;
    return CREDCTL_SE_OK;
}

int credctl_se_create_key(const char *tag, int policy, unsigned char *pub_x963, size_t *pub_len,
                          char *err, size_t err_cap) {
    @autoreleasepool {
        SecAccessControlCreateFlags flags = kSecAccessControlPrivateKeyUsage;
        if (policy == 1) {
            flags |= kSecAccessControlUserPresence;
        } else if (policy == 2) {
            if (@available(macOS 10.13.4, *)) {
                flags |= kSecAccessControlBiometryCurrentSet;
            } else {
                set_error(err, err_cap, @"fingerprint-only keys need macOS 10.13.4 or later");
                return CREDCTL_SE_ERROR;
            }
        } else if (policy != 0) {
            set_error(err, err_cap, [NSString stringWithFormat:@"unknown policy %d", policy]);
            return CREDCTL_SE_ERROR;
        }
        CFErrorRef error = NULL;
        SecAccessControlRef access = SecAccessControlCreateWithFlags(
            kCFAllocatorDefault, kSecAttrAccessibleWhenUnlockedThisDeviceOnly, flags, &error);
        if (access == NULL) {
            return fail_with(error, @"cannot create the access control", err, err_cap);
        }
        NSMutableDictionary *attributes = [@{
            (id)kSecAttrKeyType : (id)kSecAttrKeyTypeECSECPrimeRandom,
            (id)kSecAttrKeySizeInBits : @256,
            (id)kSecAttrTokenID : (id)kSecAttrTokenIDSecureEnclave,
            (id)kSecPrivateKeyAttrs : @{
                (id)kSecAttrIsPermanent : @YES,
                (id)kSecAttrApplicationTag : [NSData dataWithBytes:tag length:strlen(tag)],
                (id)kSecAttrAccessControl : (__bridge_transfer id)access,
            },
        } mutableCopy];
        /* The keychain key_query() searches, so the key is found where it was made. */
        if (@available(macOS 10.15, *)) {
            attributes[(id)kSecUseDataProtectionKeychain] = @YES;
        }
        SecKeyRef key = SecKeyCreateRandomKey((__bridge CFDictionaryRef)attributes, &error);
        if (key == NULL) {
            return fail_with(error, @"cannot create the key", err, err_cap);
        }
        int rc = copy_public_point(key, pub_x963, pub_len, err, err_cap);
        CFRelease(key);
        return rc;
    }
}

int credctl_se_copy_public_key(const char *tag, unsigned char *pub_x963, size_t *pub_len,
                               char *err, size_t err_cap) {
    @autoreleasepool {
        SecKeyRef key = NULL;
        int rc = find_key(tag, nil, &key, err, err_cap);
        if (rc != CREDCTL_SE_OK) {
            return rc;
        }
        rc = copy_public_point(key, pub_x963, pub_len, err, err_cap);
        CFRelease(key);
        return rc;
    }
}

/* Evaluates the key's own access control for signing, showing `reason`, so the
 * user sees one prompt that says what is signed and `context` carries the
 * result to SecKeyCreateSignature. A key without a user-presence policy
 * evaluates without a prompt. */
static int authenticate(SecKeyRef key, LAContext *context, NSString *reason, char *err,
                        size_t err_cap) {
    NSDictionary *attributes = CFBridgingRelease(SecKeyCopyAttributes(key));
    id access = attributes[(id)kSecAttrAccessControl];
    if (access == nil) {
        /* Nothing to evaluate here; SecKeyCreateSignature applies the key's
         * policy itself, with the context's localizedReason. */
        return CREDCTL_SE_OK;
    }
    __block BOOL succeeded = NO;
    __block NSError *failure = nil;
    dispatch_semaphore_t done = dispatch_semaphore_create(0);
    [context evaluateAccessControl:(__bridge SecAccessControlRef)access
                         operation:LAAccessControlOperationUseKeySign
                   localizedReason:reason
                             reply:^(BOOL success, NSError *error) {
                               succeeded = success;
                               failure = error;
                               dispatch_semaphore_signal(done);
                             }];
    dispatch_time_t deadline = dispatch_time(DISPATCH_TIME_NOW, PROMPT_TIMEOUT_SECONDS * NSEC_PER_SEC);
    if (dispatch_semaphore_wait(done, deadline) != 0) {
        [context invalidate];
        set_error(err, err_cap, @"authentication timed out");
        return CREDCTL_SE_ERROR;
    }
    if (succeeded) {
        return CREDCTL_SE_OK;
    }
    if (failure != nil && is_cancellation(failure)) {
        set_error(err, err_cap, @"authentication cancelled");
        return CREDCTL_SE_CANCELLED;
    }
    set_error(err, err_cap,
              [NSString stringWithFormat:@"authentication failed: %@",
                                         failure.localizedDescription ?: @"unknown error"]);
    return CREDCTL_SE_ERROR;
}

int credctl_se_sign(const char *tag, const char *reason, const unsigned char *msg, size_t msg_len,
                    unsigned char *sig_der, size_t *sig_len, char *err, size_t err_cap) {
    @autoreleasepool {
        NSString *prompt = utf8_string(reason, @"sign a credctl request");
        LAContext *context = [[LAContext alloc] init];
        if (@available(macOS 10.13, *)) {
            context.localizedReason = prompt;
        }
        SecKeyRef key = NULL;
        int rc = find_key(tag, context, &key, err, err_cap);
        if (rc != CREDCTL_SE_OK) {
            return rc;
        }
        rc = authenticate(key, context, prompt, err, err_cap);
        if (rc == CREDCTL_SE_OK) {
            CFErrorRef error = NULL;
            NSData *message = [NSData dataWithBytes:msg length:msg_len];
            CFDataRef signature = SecKeyCreateSignature(
                key, kSecKeyAlgorithmECDSASignatureMessageX962SHA256,
                (__bridge CFDataRef)message, &error);
            if (signature == NULL) {
                rc = fail_with(error, @"signing failed", err, err_cap);
            } else {
                NSData *der = CFBridgingRelease(signature);
                if (der.length > *sig_len) {
                    set_error(err, err_cap, @"the signature is larger than expected");
                    rc = CREDCTL_SE_ERROR;
                } else {
                    memcpy(sig_der, der.bytes, der.length);
                    *sig_len = der.length;
                }
            }
        }
        CFRelease(key);
        return rc;
    }
}

int credctl_se_delete_keys(const char *tag, char *err, size_t err_cap) {
    @autoreleasepool {
        NSDictionary *query = key_query(tag);
        /* One SecItemDelete may remove only one of several duplicates. */
        for (int attempt = 0; attempt < 1000; attempt++) {
            OSStatus status = SecItemDelete((__bridge CFDictionaryRef)query);
            if (status == errSecItemNotFound) {
                return CREDCTL_SE_OK;
            }
            if (status != errSecSuccess) {
                set_error(err, err_cap,
                          [NSString stringWithFormat:@"cannot delete the key: %@",
                                                     status_text(status)]);
                return CREDCTL_SE_ERROR;
            }
        }
        set_error(err, err_cap, @"keys with this tag are still there after 1000 deletions");
        return CREDCTL_SE_ERROR;
    }
}
