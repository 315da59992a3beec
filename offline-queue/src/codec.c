/* codec — stored records in and out of protobuf, validated on the way in. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

uint8_t *codec_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

static int id_ok_or_empty(const char *s)
{
    return s && (s[0] == '\0' || mqc_id_valid(MQC_ID_KEY, s));
}

mqstore_err codec_msg(const char *buf, size_t len, Mqstore__Rec__MsgRecord **out)
{
    Mqstore__Rec__MsgRecord *m = mqstore__rec__msg_record__unpack(NULL, len, (const uint8_t *)buf);
    if (!m) return MQSTORE_ERR_CORRUPT;
    if (!mqc_id_valid(MQC_ID_KEY, m->sender_user) || !id_ok_or_empty(m->sender_device) ||
        !id_ok_or_empty(m->client_msg_id)) {
        mqstore__rec__msg_record__free_unpacked(m, NULL);
        return MQSTORE_ERR_CORRUPT;
    }
    *out = m;
    return MQSTORE_OK;
}

mqstore_err codec_dedup(const char *buf, size_t len, Mqstore__Rec__DedupRecord **out)
{
    Mqstore__Rec__DedupRecord *m =
        mqstore__rec__dedup_record__unpack(NULL, len, (const uint8_t *)buf);
    if (!m) return MQSTORE_ERR_CORRUPT;
    if (!mqc_id_valid(MQC_ID_KEY, m->conv) || m->seq == 0) {
        mqstore__rec__dedup_record__free_unpacked(m, NULL);
        return MQSTORE_ERR_CORRUPT;
    }
    *out = m;
    return MQSTORE_OK;
}

mqstore_err codec_inbox(const char *buf, size_t len, Mqstore__Rec__InboxEntry **out)
{
    Mqstore__Rec__InboxEntry *m =
        mqstore__rec__inbox_entry__unpack(NULL, len, (const uint8_t *)buf);
    if (!m) return MQSTORE_ERR_CORRUPT;
    if (!mqc_id_valid(MQC_ID_KEY, m->conv) || m->seq == 0) {
        mqstore__rec__inbox_entry__free_unpacked(m, NULL);
        return MQSTORE_ERR_CORRUPT;
    }
    *out = m;
    return MQSTORE_OK;
}

mqstore_err codec_member(const char *buf, size_t len, Mqstore__Rec__MemberRecord **out)
{
    Mqstore__Rec__MemberRecord *m =
        mqstore__rec__member_record__unpack(NULL, len, (const uint8_t *)buf);
    if (!m) return MQSTORE_ERR_CORRUPT;
    if (m->role < MQSTORE_ROLE_MEMBER || m->role > MQSTORE_ROLE_OWNER) {
        mqstore__rec__member_record__free_unpacked(m, NULL);
        return MQSTORE_ERR_CORRUPT;
    }
    *out = m;
    return MQSTORE_OK;
}

mqstore_err codec_cursor(const char *buf, size_t len, Mqstore__Rec__CursorRecord **out)
{
    Mqstore__Rec__CursorRecord *m =
        mqstore__rec__cursor_record__unpack(NULL, len, (const uint8_t *)buf);
    if (!m) return MQSTORE_ERR_CORRUPT;
    *out = m;
    return MQSTORE_OK;
}

mqstore_err codec_receipt(const char *buf, size_t len, Mqstore__Rec__ReceiptRecord **out)
{
    Mqstore__Rec__ReceiptRecord *m =
        mqstore__rec__receipt_record__unpack(NULL, len, (const uint8_t *)buf);
    if (!m) return MQSTORE_ERR_CORRUPT;
    if (m->read > m->delivered) {
        mqstore__rec__receipt_record__free_unpacked(m, NULL);
        return MQSTORE_ERR_CORRUPT;
    }
    *out = m;
    return MQSTORE_OK;
}
