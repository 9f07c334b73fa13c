/* uuid: canonical-form validation shared by the services, the gateway and the events consumer. */
#include "common/uuid.h"

#include <string.h>

bool uuid_valid_n(const char *s, size_t n)
{
    if (!s || n != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

bool uuid_valid(const char *s)
{
    return s && uuid_valid_n(s, strnlen(s, 37));
}
